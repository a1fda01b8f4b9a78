use aemos_api::cli::{Command, LogFormat};

/// mimalloc: per-thread heaps, where glibc's arenas contend between the runtime's threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // Flags, environment, and `serve --config FILE` under them.
    let cli = aemos_api::config_file::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,datafusion=warn,rumqttd=warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().init(),
    }
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
