//! The `switchyard-client` command line: arguments, the connection to the
//! server and one function per subcommand. Parsing of tensors given on the
//! command line lives in `input`, printing in `output`; the load generator's
//! command in `perf` and its chart in `plot`.

mod input;
mod output;
mod perf;
mod plot;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use switchyard_client::{
    ClientOptions, Encoding, GrpcClient, HttpClient, InferOptions, InferResult, Tensor, TlsOptions,
};

/// Command-line client for Switchyard and other KServe V2 / Triton servers.
#[derive(Debug, Parser)]
#[command(name = "switchyard-client", version)]
pub struct Cli {
    /// Server address [default: 127.0.0.1:8000 for http, 127.0.0.1:8001 for grpc]. TLS is used
    /// with https://, or without a scheme when a TLS option is given.
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// Protocol to speak.
    #[arg(long, global = true, value_enum, default_value_t = Protocol::Http)]
    pub protocol: Protocol,
    /// Seconds one request may take, connecting included (0: no limit).
    #[arg(long, global = true, value_name = "SECS", default_value = "60", value_parser = parse_limit)]
    pub timeout: Limit,
    /// Seconds connecting may take, TLS handshake included (0: no limit).
    #[arg(long, global = true, value_name = "SECS", default_value = "10", value_parser = parse_limit)]
    pub connect_timeout: Limit,
    /// TLS: PEM file of the CA certificates to trust instead of the system's.
    #[arg(long, global = true, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// TLS: PEM client certificate (chain) for mutual TLS; needs --key.
    #[arg(long, global = true, value_name = "PATH", requires = "key")]
    pub cert: Option<PathBuf>,
    /// TLS: PEM private key of --cert.
    #[arg(long, global = true, value_name = "PATH", requires = "cert")]
    pub key: Option<PathBuf>,
    /// TLS: the name the server's certificate must carry, when it is not the URL's host.
    #[arg(long, global = true, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A time limit from the command line: `None` for 0 (no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<Duration>);

fn parse_limit(s: &str) -> Result<Limit, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if secs == 0.0 {
        return Ok(Limit(None));
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if secs > 0.0 => Ok(Limit(Some(d))),
        _ => Err(format!("'{s}' is not a number of seconds (0 for no limit)")),
    }
}

impl Cli {
    /// The connection options the flags give (reads the TLS files).
    pub fn client_options(&self) -> Result<ClientOptions> {
        let mut tls = TlsOptions::from_files(self.ca_file.as_deref(), self.cert.as_deref(), self.key.as_deref())?;
        tls.server_name = self.tls_server_name.clone();
        Ok(ClientOptions::default()
            .with_connect_timeout(self.connect_timeout.0)
            .with_request_timeout(self.timeout.0)
            .with_tls(tls))
    }
}

/// Wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// KServe V2 REST.
    Http,
    /// KServe V2 gRPC (`inference.GRPCInferenceService`).
    Grpc,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print whether the server is live and ready; exit with 1 unless it is ready.
    Ready,
    /// List the models of the repository with their version, state and reason.
    Models,
    /// Print a model's metadata as JSON.
    Metadata {
        /// Model name.
        model: String,
        /// Model version (default: the server's choice).
        #[arg(long)]
        version: Option<String>,
    },
    /// Run one inference request and print the outputs as JSON.
    Infer(InferArgs),
    /// Switchyard (HTTP): explain one row (feature attributions against the
    /// model's reference means) and print the JSON.
    Explain(ExplainArgs),
    /// Generate load and report throughput and latency, like perf_analyzer.
    Perf(perf::PerfArgs),
    /// Switchyard (HTTP): print a model's versions, default route and labels.
    Labels {
        /// Model name.
        model: String,
    },
    /// Switchyard (HTTP): print a model's card as JSON (`--text`: the card file as written).
    Card {
        /// Model name.
        model: String,
        /// Print the card's file (Markdown or JSON) instead of the parsed card.
        #[arg(long)]
        text: bool,
    },
    /// Switchyard (HTTP, admin): point a label at a loaded version (`--delete` removes it).
    Label {
        /// Model name.
        model: String,
        /// Label (`stable`, `canary`, ...), or `default` to pin the default route (`latest` unpins).
        label: String,
        /// Version number (or `latest` with `default`).
        #[arg(required_unless_present = "delete")]
        version: Option<String>,
        /// Remove the label.
        #[arg(long, conflicts_with = "version")]
        delete: bool,
        /// Admin token [env: SWITCHYARD_ADMIN_TOKEN].
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Switchyard (HTTP): a model's traffic policy (`get`), overridden at run time (`set`, `clear`: admin), and its
    /// shadow report (`report`).
    Traffic {
        #[command(subcommand)]
        action: TrafficAction,
    },
    /// Switchyard (HTTP, admin): point the default route (or a label) back to the previous version, or to `--to`.
    Rollback {
        /// Model name.
        model: String,
        /// Roll this label back instead of the default route.
        #[arg(long)]
        label: Option<String>,
        /// Version to go to (default: the previous one that is still loaded).
        #[arg(long)]
        to: Option<String>,
        /// Admin token [env: SWITCHYARD_ADMIN_TOKEN].
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

/// Arguments of `infer`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["request", "inputs"])))]
pub struct InferArgs {
    /// Model name.
    pub model: String,
    /// Model version (default: the server's choice).
    #[arg(long)]
    pub version: Option<String>,
    /// A KServe V2 JSON inference request body (inputs with name, shape,
    /// datatype and data; optional id, parameters and outputs), used for
    /// either protocol.
    #[arg(long, value_name = "FILE.json")]
    pub request: Option<PathBuf>,
    /// An input tensor, e.g. `INPUT0:INT32:1x4:1,2,3,4`; SHAPE may be empty for
    /// a scalar; VALUES may be `@file.bin` for raw little-endian bytes (BYTES:
    /// 4-byte length prefix per element). Repeat for several inputs.
    #[arg(long = "input", value_name = "NAME:DATATYPE:SHAPE:VALUES", value_parser = input::parse_input)]
    pub inputs: Vec<Tensor>,
    /// An output to return (repeatable; default: all, or those of --request).
    #[arg(long = "output", value_name = "NAME")]
    pub outputs: Vec<String>,
    /// HTTP: send inputs and receive outputs with the binary tensor data extension.
    #[arg(long)]
    pub binary: bool,
}

/// Arguments of `explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Model name.
    pub model: String,
    /// Model version (default: the server's choice).
    #[arg(long)]
    pub version: Option<String>,
    /// The row: an input tensor as for `infer`, with a batch of 1 (repeat for several inputs).
    #[arg(long = "input", value_name = "NAME:DATATYPE:SHAPE:VALUES", value_parser = input::parse_input, required = true)]
    pub inputs: Vec<Tensor>,
    /// `occlusion` or `shapley`.
    #[arg(long, default_value = "occlusion")]
    pub method: String,
    /// Another explanation parameter, `KEY=VALUE` (integers are sent as numbers):
    /// `input`, `output`, `target`, `max_evaluations`, `timeout_ms`, `seed`.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
}

/// A connected client of either protocol.
#[derive(Debug, Clone)]
pub enum Conn {
    /// REST.
    Http(HttpClient),
    /// gRPC.
    Grpc(GrpcClient),
}

/// The address used when `--url` is not given.
pub fn default_url(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Http => "127.0.0.1:8000",
        Protocol::Grpc => "127.0.0.1:8001",
    }
}

impl Conn {
    /// Connects with `protocol` to `url`, or to the protocol's default address.
    pub async fn connect(protocol: Protocol, url: Option<&str>, options: &ClientOptions) -> Result<Conn> {
        let url = url.unwrap_or(default_url(protocol));
        Ok(match protocol {
            Protocol::Http => Conn::Http(HttpClient::with_options(url, options)?),
            Protocol::Grpc => Conn::Grpc(
                GrpcClient::connect_with_options(url, options)
                    .await
                    .with_context(|| format!("connecting to {url}"))?,
            ),
        })
    }

    /// One inference request over whichever protocol this is.
    pub async fn infer(&self, model: &str, inputs: &[Tensor], opts: &InferOptions) -> Result<InferResult> {
        Ok(match self {
            Conn::Http(c) => c.infer(model, inputs, opts).await?,
            Conn::Grpc(c) => c.infer(model, inputs, opts).await?,
        })
    }
}

/// Runs the command line; the exit code reports the command's outcome.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let options = cli.client_options()?;
    let (protocol, url, o) = (cli.protocol, cli.url.as_deref(), &options);
    match cli.command {
        Command::Ready => ready(&Conn::connect(protocol, url, o).await?).await,
        Command::Models => models(&Conn::connect(protocol, url, o).await?).await,
        Command::Metadata { model, version } => {
            metadata(&Conn::connect(protocol, url, o).await?, &model, version.as_deref()).await
        }
        Command::Infer(args) => infer(&Conn::connect(protocol, url, o).await?, args).await,
        Command::Explain(args) => {
            let mut opts = InferOptions {
                model_version: args.version,
                ..InferOptions::default()
            };
            opts.parameters.insert("method".into(), args.method.into());
            for p in &args.params {
                let (k, v) = p
                    .split_once('=')
                    .with_context(|| format!("--param {p}: expected KEY=VALUE"))?;
                let value = v.parse::<u64>().map_or_else(|_| v.into(), serde_json::Value::from);
                opts.parameters.insert(k.to_string(), value);
            }
            print_json(
                admin_client(url, None, o)?
                    .explain(&args.model, &args.inputs, &opts)
                    .await?,
            )
        }
        // The load generator opens its own connections.
        Command::Perf(args) => perf::run(protocol, url, o, args).await,
        Command::Labels { model } => print_json(admin_client(url, None, o)?.labels(&model).await?),
        Command::Card { model, text } => {
            let card = admin_client(url, None, o)?.model_card(&model).await?;
            match (text, card["content"].as_str()) {
                (true, Some(content)) => {
                    print!("{content}");
                    Ok(ExitCode::SUCCESS)
                }
                _ => print_json(card),
            }
        }
        Command::Label {
            model,
            label,
            version,
            delete,
            token,
        } => {
            let c = admin_client(url, token.as_deref(), o)?;
            print_json(match (delete, label.as_str(), version.as_deref()) {
                (true, "default", _) => c.set_default(&model, "latest").await?,
                (true, _, _) => c.delete_label(&model, &label).await?,
                (false, "default", Some(v)) => c.set_default(&model, v).await?,
                (false, _, Some(v)) => c.set_label(&model, &label, v).await?,
                (false, _, None) => anyhow::bail!("a version is needed"),
            })
        }
        Command::Traffic { action } => print_json(match action {
            TrafficAction::Get { model } => admin_client(url, None, o)?.traffic(&model).await?,
            TrafficAction::Report { model } => admin_client(url, None, o)?.shadow_report(&model).await?,
            TrafficAction::Set { model, policy, token } => {
                let text = match policy.strip_prefix('@') {
                    Some(path) => std::fs::read_to_string(path)?,
                    None => policy,
                };
                let policy: serde_json::Value = serde_json::from_str(&text)?;
                admin_client(url, token.as_deref(), o)?
                    .set_traffic(&model, &policy)
                    .await?
            }
            TrafficAction::Clear { model, token } => {
                admin_client(url, token.as_deref(), o)?.clear_traffic(&model).await?
            }
        }),
        Command::Rollback {
            model,
            label,
            to,
            token,
        } => print_json(
            admin_client(url, token.as_deref(), o)?
                .rollback(&model, label.as_deref(), to.as_deref())
                .await?,
        ),
    }
}

/// The label and rollback API is Switchyard's own, over HTTP.
fn admin_client(url: Option<&str>, token: Option<&str>, options: &ClientOptions) -> Result<HttpClient> {
    let c = HttpClient::with_options(url.unwrap_or(default_url(Protocol::Http)), options)?;
    Ok(match token {
        Some(t) => c.with_admin_token(t),
        None => c,
    })
}

fn print_json(v: serde_json::Value) -> Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(ExitCode::SUCCESS)
}

async fn ready(conn: &Conn) -> Result<ExitCode> {
    let (live, ready) = match conn {
        Conn::Http(c) => (c.live().await?, c.ready().await?),
        Conn::Grpc(c) => (c.live().await?, c.ready().await?),
    };
    println!("live: {live}\nready: {ready}");
    Ok(if ready { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn models(conn: &Conn) -> Result<ExitCode> {
    let rows = match conn {
        Conn::Http(c) => output::index_rows_from_json(&c.repository_index(false).await?)?,
        Conn::Grpc(c) => output::index_rows_from_proto(c.repository_index(false).await?),
    };
    print!("{}", output::table(&["NAME", "VERSION", "STATE", "REASON"], &rows));
    Ok(ExitCode::SUCCESS)
}

async fn metadata(conn: &Conn, model: &str, version: Option<&str>) -> Result<ExitCode> {
    let text = match conn {
        Conn::Http(c) => serde_json::to_string_pretty(&c.model_metadata(model, version).await?)?,
        Conn::Grpc(c) => {
            serde_json::to_string_pretty(&output::MetadataJson::from(c.model_metadata(model, version).await?))?
        }
    };
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

async fn infer(conn: &Conn, args: InferArgs) -> Result<ExitCode> {
    let (inputs, mut opts) = match &args.request {
        Some(path) => {
            let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let body: serde_json::Value =
                serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
            input::request_from_json(&body)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("in {}", path.display()))?
        }
        None => (args.inputs, InferOptions::default()),
    };
    opts.model_version = args.version;
    if !args.outputs.is_empty() {
        opts.outputs = args.outputs;
    }
    if args.binary {
        opts.input_encoding = Encoding::Binary;
        opts.output_encoding = Encoding::Binary;
    }
    let result = conn.infer(&args.model, &inputs, &opts).await?;
    println!("{}", output::result_text(&result));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn infer_takes_inputs_or_a_request_file_but_not_both() {
        let cli = Cli::try_parse_from([
            "switchyard-client",
            "--protocol",
            "grpc",
            "infer",
            "simple",
            "--input",
            "INPUT0:INT32:1x2:1,2",
            "--input",
            "INPUT1:INT32:1x2:3,4",
            "--binary",
        ])
        .unwrap();
        assert_eq!(cli.protocol, Protocol::Grpc);
        let Command::Infer(args) = cli.command else {
            panic!("not infer")
        };
        assert_eq!(args.inputs.len(), 2);
        assert!(args.binary);
        assert!(Cli::try_parse_from(["switchyard-client", "infer", "simple"]).is_err());
        assert!(
            Cli::try_parse_from([
                "switchyard-client",
                "infer",
                "simple",
                "--request",
                "r.json",
                "--input",
                "A:INT32:1:1"
            ])
            .is_err()
        );
        let bad = Cli::try_parse_from(["switchyard-client", "infer", "simple", "--input", "A:INT32:2:1"]);
        assert!(bad.unwrap_err().to_string().contains("2 elements"));
    }

    #[test]
    fn timeouts_and_tls_flags_are_global() {
        let cli = Cli::try_parse_from(["switchyard-client", "ready"]).unwrap();
        let o = cli.client_options().unwrap();
        assert_eq!(o.request_timeout, Some(Duration::from_secs(60)));
        assert_eq!(o.connect_timeout, Some(Duration::from_secs(10)));
        assert!(!o.tls.is_set());
        let cli = Cli::try_parse_from([
            "switchyard-client",
            "perf",
            "-m",
            "simple",
            "--timeout",
            "0.25",
            "--connect-timeout",
            "0",
            "--tls-server-name",
            "switchyard.test",
        ])
        .unwrap();
        let o = cli.client_options().unwrap();
        assert_eq!(o.request_timeout, Some(Duration::from_millis(250)));
        assert_eq!(o.connect_timeout, None);
        assert_eq!(o.tls.server_name.as_deref(), Some("switchyard.test"));
        for bad in ["-1", "x", "1e300", "NaN"] {
            assert!(
                Cli::try_parse_from(["switchyard-client", "--timeout", bad, "ready"]).is_err(),
                "{bad}"
            );
        }
        // A certificate needs its key and the other way round.
        assert!(Cli::try_parse_from(["switchyard-client", "--cert", "c.pem", "ready"]).is_err());
        assert!(Cli::try_parse_from(["switchyard-client", "ready", "--key", "k.pem"]).is_err());
        let missing = Cli::try_parse_from(["switchyard-client", "ready", "--ca-file", "/nonexistent/ca.pem"]).unwrap();
        assert!(
            missing
                .client_options()
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/ca.pem")
        );
    }
}

/// `traffic get|set|clear|report`.
#[derive(Debug, Subcommand)]
pub(crate) enum TrafficAction {
    /// Print the shadow report: pairs by outcome, per-output comparison, recent window, worst divergences, gate.
    Report {
        /// Model name.
        model: String,
    },
    /// Print the effective policy, its source (file, override, none) and the file's policy.
    Get {
        /// Model name.
        model: String,
    },
    /// Override the policy (admin): JSON of the `traffic.yaml` structure, or `@FILE` holding it.
    Set {
        /// Model name.
        model: String,
        /// The policy as JSON, or `@path/to/policy.json`.
        policy: String,
        /// Admin token [env: SWITCHYARD_ADMIN_TOKEN].
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Clear the override (admin): the file's policy applies again.
    Clear {
        /// Model name.
        model: String,
        /// Admin token [env: SWITCHYARD_ADMIN_TOKEN].
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}
