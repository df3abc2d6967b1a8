//! `switchyard validate`: the gate a server applies before a version takes
//! traffic, run offline so a CI/CD pipeline can stop a bad model repository
//! before it reaches a server. For every model (or those named): the config
//! parses, every selected version loads in ONNX Runtime, config and model
//! agree, warm-up runs, the golden set and latency budget pass, and
//! `traffic.yaml` (if any) parses and names selected versions, and the model
//! card (if any; required with `--require-model-card`) parses. Prints a
//! report; exits non-zero when anything fails.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;

use crate::lifecycle::audit::{Actor, Audit};
use crate::lifecycle::{Deployer, LoadSettings};
use crate::model::onnx::OnnxBackend;
use crate::repository::{self, card};

/// Checks a model repository offline.
#[derive(Debug, Clone, Parser)]
#[command(name = "switchyard validate")]
pub struct ValidateArgs {
    /// Model repository in Triton's layout.
    #[arg(long, env = "SWITCHYARD_MODEL_REPOSITORY")]
    pub model_repository: PathBuf,
    /// Serve a directory holding one model's files as the model NAME (as the server's flag).
    #[arg(long, env = "SWITCHYARD_MODEL_NAME", value_name = "NAME")]
    pub model_name: Option<String>,
    /// Only these models (repeatable; default: every model directory).
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// ONNX Runtime shared library (same lookup as the server).
    #[arg(long, env = "SWITCHYARD_ORT_LIBRARY")]
    pub ort_library: Option<PathBuf>,
    /// max_batch_size given to config-less batchable models.
    #[arg(long, env = "SWITCHYARD_DEFAULT_MAX_BATCH_SIZE", default_value_t = 4)]
    pub default_max_batch_size: u32,
    /// Synthetic warm-up for models without `model_warmup`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub model_warmup: bool,
    /// Fail models without a model card (`model_card.md` or `model_card.json`);
    /// an invalid card fails without this flag too.
    #[arg(long, env = "SWITCHYARD_REQUIRE_MODEL_CARD")]
    pub require_model_card: bool,
}

/// One model's outcome.
#[derive(Debug, Clone)]
pub struct ModelReport {
    /// Model name.
    pub model: String,
    /// Lines for passing versions.
    pub passed: Vec<String>,
    /// Problems.
    pub failures: Vec<String>,
}

/// Runs the checks; the report per model.
pub async fn check(args: &ValidateArgs) -> anyhow::Result<Vec<ModelReport>> {
    crate::model::onnx::init_runtime(args.ort_library.as_deref()).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        args.model_repository.is_dir(),
        "model repository {} is not a directory",
        args.model_repository.display()
    );
    if let Some(name) = &args.model_name {
        repository::validate_model_name(name).map_err(|e| anyhow::anyhow!("--model-name: {e}"))?;
    }
    let repo = repository::Repository::new(&args.model_repository).with_model_name(args.model_name.clone());
    let names = if args.models.is_empty() {
        repository::list_models(&repo).map_err(|e| anyhow::anyhow!("{e}"))?
    } else {
        args.models.clone()
    };
    anyhow::ensure!(
        !names.is_empty(),
        "no model directories in {}",
        args.model_repository.display()
    );
    let settings = LoadSettings {
        default_max_batch_size: args.default_max_batch_size,
        synthetic_warmup: args.model_warmup,
        ..LoadSettings::default()
    };
    let actor = Actor::Validate;
    let mut reports = Vec::new();
    for name in names {
        // A fresh table per model: nothing is kept between models.
        let deployer = Deployer::new(settings.clone(), Audit::default(), Arc::new(OnnxBackend));
        let mut report = ModelReport {
            model: name.clone(),
            passed: Vec::new(),
            failures: Vec::new(),
        };
        if let Err(e) = repository::validate_model_name(&name) {
            report.failures.push(e.message);
            reports.push(report);
            continue;
        }
        match deployer.load(&repo, &name, None, &actor).await {
            Ok(r) => {
                report.passed = r.loaded.iter().map(|(v, d)| format!("version {v}: {d}")).collect();
                let entry = deployer.registry().get(&name);
                if let Some((policy, _)) = entry.as_ref().and_then(|e| e.traffic()) {
                    report.passed.push(format!("traffic.yaml: {}", policy.to_json()));
                }
                match entry.as_ref().and_then(|e| e.card.as_ref()) {
                    Some(card) => report.passed.push(card_line(card)),
                    None if args.require_model_card => report.failures.push(format!(
                        "no model card: add {} or {} beside the versions (--require-model-card)",
                        card::CARD_MARKDOWN,
                        card::CARD_JSON
                    )),
                    None => {}
                }
            }
            Err(e) => report.failures.push(e.message),
        }
        reports.push(report);
    }
    Ok(reports)
}

/// The report's line for a valid card: file, digest, sections, and the
/// recommended sections it lacks.
fn card_line(card: &card::ModelCard) -> String {
    let present = card.present();
    let mut line = format!(
        "model_card: {} sha256 {}, sections {}",
        card.file,
        card.sha256,
        if present.is_empty() {
            "none".to_string()
        } else {
            present.join(", ")
        }
    );
    let missing = card.missing();
    if !missing.is_empty() {
        line.push_str(&format!("; missing recommended sections: {}", missing.join(", ")));
    }
    line
}

/// Runs `switchyard validate` with `argv` (starting at `validate`); prints the
/// report; returns whether everything passed.
pub async fn main(argv: impl IntoIterator<Item = String>) -> bool {
    let args = match ValidateArgs::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return !e.use_stderr();
        }
    };
    match check(&args).await {
        Ok(reports) => {
            let failed = reports.iter().filter(|r| !r.failures.is_empty()).count();
            for r in &reports {
                if r.failures.is_empty() {
                    println!("PASS  {}", r.model);
                } else {
                    println!("FAIL  {}", r.model);
                }
                for line in &r.passed {
                    println!("      ok: {line}");
                }
                for line in &r.failures {
                    println!("      error: {line}");
                }
            }
            println!(
                "{} of {} models passed{}",
                reports.len() - failed,
                reports.len(),
                if failed > 0 { "" } else { "." }
            );
            failed == 0
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            false
        }
    }
}
