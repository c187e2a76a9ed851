//! The dashboard loop: draws the model at a steady rate, feeds it key presses and the feeds'
//! updates, and performs the effects the model asks for (cluster-control actions, quitting).
//! It owns the terminal while it runs and nothing about the cluster itself.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossterm::event::{Event, EventStream};
use ratatui::Terminal;
use ratatui::backend::Backend;
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, StreamExt};

use crate::TuiError;
use crate::feed;
use crate::keys::key_of;
use crate::model::{Effect, Model, Update};

/// Frame interval: 5 frames a second. Key presses redraw at once.
pub const FRAME: Duration = Duration::from_millis(200);

/// How the dashboard was left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quit {
    /// In a demo: stop the cluster (otherwise it keeps running until Ctrl-C).
    pub stop_cluster: bool,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the dashboard on the real terminal (raw mode, alternate screen) until the user quits or
/// `stop` resolves; restores the terminal in every case.
pub async fn run_terminal(
    model: Model,
    stop: impl std::future::Future<Output = ()>,
    checkpoints: Option<(std::path::PathBuf, feed::CheckpointDirs)>,
) -> Result<Quit, TuiError> {
    let mut terminal = ratatui::try_init().map_err(|e| TuiError::Terminal(e.to_string()))?;
    let result = run(&mut terminal, model, EventStream::new(), stop, checkpoints).await;
    ratatui::restore();
    result
}

/// The loop, on any backend and any source of terminal events (tests use a `TestBackend` and a
/// scripted stream).
pub async fn run<B: Backend>(
    terminal: &mut Terminal<B>,
    mut model: Model,
    mut events: impl Stream<Item = io::Result<Event>> + Unpin,
    stop: impl std::future::Future<Output = ()>,
    checkpoints: Option<(std::path::PathBuf, feed::CheckpointDirs)>,
) -> Result<Quit, TuiError> {
    let (tx, mut updates) = mpsc::channel::<Update>(64);
    let (control_tx, control_rx) = watch::channel(model.control_address().map(str::to_string));
    let mut feeds = vec![
        tokio::spawn(feed::status_feed(model.target().to_string(), tx.clone())),
        tokio::spawn(feed::control_feed(control_rx, tx.clone())),
    ];
    // With the cluster's directories at hand (demo), checkpoints are also read from disk.
    if let Some((run_dir, dirs)) = checkpoints {
        feeds.push(tokio::spawn(feed::checkpoint_feed(
            run_dir,
            dirs,
            tx.clone(),
        )));
    }
    let _feeds = AbortOnDrop(feeds);
    let mut tick = tokio::time::interval(FRAME);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(stop);
    let draw = |terminal: &mut Terminal<B>, model: &Model| {
        terminal
            .draw(|frame| frame.render_widget(model, frame.area()))
            .map(|_| ())
            .map_err(|e| TuiError::Terminal(e.to_string()))
    };
    let outcome = loop {
        tokio::select! {
            _ = tick.tick() => {
                model.tick(now_ms());
                draw(terminal, &model)?;
            }
            event = events.next() => match event {
                Some(Ok(Event::Key(key))) => {
                    let Some(key) = key_of(&key) else { continue };
                    model.tick(now_ms());
                    match model.on_key(key) {
                        Some(Effect::Quit { stop_cluster }) => break Quit { stop_cluster },
                        Some(Effect::Drain { worker_id, label }) => {
                            let (tx, dispatcher) = (tx.clone(), model.target().to_string());
                            tokio::spawn(async move {
                                let done = feed::drain(dispatcher, worker_id, label).await;
                                let _ = tx.send(done).await;
                            });
                        }
                        Some(Effect::Pin { workers, label }) => {
                            let (tx, dispatcher) = (tx.clone(), model.target().to_string());
                            tokio::spawn(async move {
                                let result = cachew_cluster::pin_workers(
                                    &dispatcher,
                                    workers,
                                    feed::ACT_TIMEOUT,
                                )
                                .await;
                                let _ = tx.send(Update::PinDone { label, result }).await;
                            });
                        }
                        Some(Effect::Act(command)) => match model.control_address() {
                            Some(address) => {
                                let tx = tx.clone();
                                let address = address.to_string();
                                tokio::spawn(async move {
                                    let _ = tx.send(feed::act(address, command).await).await;
                                });
                            }
                            None => model.apply(
                                Update::ActDone {
                                    label: command.label,
                                    result: Err("no cluster control".into()),
                                },
                                now_ms(),
                            ),
                        },
                        None => {}
                    }
                    draw(terminal, &model)?;
                }
                Some(Ok(Event::Resize(..))) => draw(terminal, &model)?,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(TuiError::Terminal(e.to_string())),
                // The terminal is gone: leave as if asked to stop.
                None => break Quit { stop_cluster: true },
            },
            Some(update) = updates.recv() => {
                model.apply(update, now_ms());
                let address = model.control_address().map(str::to_string);
                control_tx.send_if_modified(|current| {
                    if *current != address {
                        *current = address;
                        true
                    } else {
                        false
                    }
                });
            }
            () = &mut stop => break Quit { stop_cluster: true },
        }
    };
    Ok(outcome)
}

/// Stops the feeds when the loop ends, however it ends.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
