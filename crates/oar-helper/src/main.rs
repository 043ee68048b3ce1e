//! `oar-helper`: runs inside every job pod (and is the shell executor's artifact/cache tool).

use clap::Parser;

/// Oar's in-job helper.
#[derive(Debug, Parser)]
#[command(name = "oar-helper", version)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
