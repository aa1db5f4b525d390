//! PLACEHOLDER: `lab compare` (being written).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct CompareArgs {}

pub fn run(_: CompareArgs) -> Result<ExitCode, String> {
    Err("lab compare is not built yet".into())
}
