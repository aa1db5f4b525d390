//! PLACEHOLDER: `lab bench` (being written).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

pub fn run(_: BenchArgs) -> Result<ExitCode, String> {
    Err("lab bench is not built yet".into())
}
