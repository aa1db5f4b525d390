//! PLACEHOLDER: `lab profile` (being written).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ProfileArgs {}

pub fn run(_: ProfileArgs) -> Result<ExitCode, String> {
    Err("lab profile is not built yet".into())
}
