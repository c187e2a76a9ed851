//! `cachew-client`: see `cachew_client::cli`.

fn main() -> std::process::ExitCode {
    cachew_client::cli::main(std::env::args_os().collect())
}
