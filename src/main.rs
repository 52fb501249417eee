//! The `companion` binary: parse the command line and hand over to the library.
use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = companion::cli::Cli::parse();
    match companion::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
