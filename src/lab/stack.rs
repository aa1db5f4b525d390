//! PLACEHOLDER: `lab demo`, `stop`, `logs`, `grafana`, `clean` (being written).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {}
#[derive(Debug, clap::Args)]
pub struct StopArgs {}
#[derive(Debug, clap::Args)]
pub struct LogsArgs {}
#[derive(Debug, clap::Args)]
pub struct GrafanaArgs {}
#[derive(Debug, clap::Args)]
pub struct CleanArgs {}

pub fn demo(_: DemoArgs) -> Result<ExitCode, String> {
    Err("lab demo is not built yet".into())
}
pub fn stop(_: StopArgs) -> Result<ExitCode, String> {
    Err("lab stop is not built yet".into())
}
pub fn logs(_: LogsArgs) -> Result<ExitCode, String> {
    Err("lab logs is not built yet".into())
}
pub fn grafana(_: GrafanaArgs) -> Result<ExitCode, String> {
    Err("lab grafana is not built yet".into())
}
pub fn clean(_: CleanArgs) -> Result<ExitCode, String> {
    Err("lab clean is not built yet".into())
}
