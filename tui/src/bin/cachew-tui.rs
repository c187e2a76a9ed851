//! `cachew-tui`: see `cachew_tui::cli`.

fn main() -> std::process::ExitCode {
    cachew_tui::cli::main(std::env::args_os().collect())
}
