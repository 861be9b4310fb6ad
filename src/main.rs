use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = vishguard::cli::Cli::parse();
    // The audio readers log their own complaints (a probe that found nothing); vishguard
    // says the same in its error, naming the file, so they are shown only with -vv.
    let default_level = match cli.verbose {
        0 => "warn,symphonia=off",
        1 => "info,symphonia=off",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    std::process::exit(vishguard::cli::run(cli));
}
