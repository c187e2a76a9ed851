//! `cachew-worker`: see `cachew_worker::cli`.

fn main() -> std::process::ExitCode {
    cachew_worker::cli::main(std::env::args_os().collect())
}
