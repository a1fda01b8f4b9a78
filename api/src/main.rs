use clap::Parser;

use aemos_api::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,datafusion=warn,rumqttd=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => aemos_api::serve::serve(*args).await,
            Command::Sql(args) => aemos_api::sql_command::run(args).await,
            Command::Chains(aemos_api::cli::ChainsCommand::Apply(args)) => {
                aemos_api::chains_command::apply(args).await
            }
            Command::Simulate(args) => aemos_api::simulate::simulate(args).await,
        }
    })
}
