//! `ferrocket-operator`: `crd` prints the CRDs; the controller (`run`, `render`) is built
//! by the operator issue.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("crd") => match ferrocket_operator::crds_yaml() {
            Ok(y) => {
                print!("{y}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some("--version") | Some("version") => {
            println!("ferrocket-operator {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "usage: ferrocket-operator crd   (the controller commands `run` and `render` are not built yet)"
            );
            ExitCode::from(2)
        }
    }
}
