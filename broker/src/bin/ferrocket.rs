//! The `ferrocket` binary: see `ferrocket --help`.

fn main() -> std::process::ExitCode {
    ferrocket::cli::main()
}
