//! `ferrocket bench store`: placeholder replaced below.
use anyhow::Result;
/// Arguments.
#[derive(Debug, clap::Args)]
pub struct StoreBenchArgs {}
/// Runs the benchmark.
pub fn run(_args: StoreBenchArgs) -> Result<()> {
    Ok(())
}
