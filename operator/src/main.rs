//! `ferrocket-operator`: the Kubernetes controller for `NameServer` and `BrokerGroup`.
//!
//! The controller itself is built by the operator issue; until then this binary only
//! reports that, so the workspace and the container image have both entry points.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("version") => {
            println!("ferrocket-operator {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "ferrocket-operator {}: the controller (run, crd, render) is not built yet",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::from(2)
        }
    }
}
