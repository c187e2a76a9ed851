//! The checkpoint panel's directory watcher: checkpoints a worker writes reach the dashboard from
//! disk alone (no dispatcher), while the worker keeps its store open.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use cachew_store::CheckpointStore;
use cachew_tui::feed::checkpoint_feed;
use cachew_tui::model::{CheckpointSource, Update};
use tokio::sync::mpsc;

async fn next_count(rx: &mut mpsc::Receiver<Update>) -> u64 {
    loop {
        let update = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        if let Update::Checkpoints { source, rows } = update {
            assert_eq!(source, CheckpointSource::Directory);
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].0, "127.0.0.1:9");
            return rows[0].1.count;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_on_disk_reach_the_panel_without_a_dispatcher() {
    let run = tempfile::tempdir().unwrap();
    let dir = run.path().join("worker-1").join("checkpoints");
    let (mut store, _) = CheckpointStore::open(&dir).unwrap();
    store.write(b"first").unwrap();
    let listed = dir.clone();
    let (tx, mut rx) = mpsc::channel(8);
    let feed = tokio::spawn(checkpoint_feed(
        run.path().to_path_buf(),
        Arc::new(move || vec![("127.0.0.1:9".to_string(), listed.clone())]),
        tx,
    ));
    let first = next_count(&mut rx).await;
    assert!(first >= 1);
    store.write(b"second").unwrap();
    store.write(b"third").unwrap();
    let mut latest = next_count(&mut rx).await;
    while latest < first + 2 {
        latest = next_count(&mut rx).await;
    }
    assert_eq!(latest, first + 2);
    feed.abort();
}
