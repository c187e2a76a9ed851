//! `cachew-dispatcher`: see `cachew_dispatcher::cli`.

fn main() -> std::process::ExitCode {
    cachew_dispatcher::cli::main(std::env::args_os().collect())
}
