//! `candle_serving_cli`: talk to any TF-Serving-compatible server (status, metadata,
//! predict, reload-config, set-label) and deploy a version folder safely (push).
//! A client only: it reaches a server through the public gRPC API and a model repository
//! through the file system or object storage, never through the server's internals.
//!
//!     candle_serving_cli status minilm
//!     candle_serving_cli predict minilm "How do I reset my password?"
//!     candle_serving_cli push ./trained/3 model_repo/symptom_ner --wait
//!     candle_serving_cli push ./trained/3 s3://models/prod/symptom_ner --wait
//!     candle_serving_cli set-label symptom_ner canary=3 --config models.config
//!     candle_serving_cli job submit minilm "a long document" --wait

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use prost::Message;

use candle_serving::admission::Budget;
use candle_serving::config::{text_format, BasePath};
use candle_serving::proto::tensorflow::serving::{
    model_server_config, model_service_client::ModelServiceClient, model_spec::VersionChoice,
    prediction_service_client::PredictionServiceClient, GetModelMetadataRequest,
    GetModelStatusRequest, ModelServerConfig, ModelSpec, PredictRequest, PredictResponse,
    ReloadConfigRequest, SignatureDefMap,
};
use candle_serving::proto::tensorflow::TensorInfo;
use candle_serving::source::remote;
use candle_serving::tensor::{tensor_from_proto, tensor_to_proto, Tensor, TensorData};
use tonic::transport::Channel;

#[derive(Parser)]
#[command(
    name = "candle_serving_cli",
    version,
    about = "Client for TF-Serving-compatible model servers"
)]
struct Cli {
    /// The server's gRPC address.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8500")]
    server: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Which {
    /// A version number (default: the highest available).
    #[arg(long)]
    version: Option<i64>,
    /// A version label such as `stable` or `canary`.
    #[arg(long, conflicts_with = "version")]
    label: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Every version of a model with its state and, for a failed load, why.
    Status(StatusArgs),
    /// The signatures a model version takes and produces.
    Metadata(MetadataArgs),
    /// Predict on strings (`text`, and `text_pair` with --pair).
    Predict(PredictArgs),
    /// Send a models.config file to HandleReloadConfigRequest.
    ReloadConfig(ReloadConfigArgs),
    /// Point a version label at a version (`LABEL=` removes it): edits the config file,
    /// sends it through ReloadConfig, and writes the file back only if the server took it.
    SetLabel(SetLabelArgs),
    /// Copy a version folder into a model's base path atomically: into a hidden temporary
    /// folder, fsync, then one rename, so the server never sees a half-copied version.
    Push(PushArgs),
    /// Progressive rollouts: start (or change), status, promote, abort.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Asynchronous jobs: submit a Predict, get or wait for its result, cancel it.
    #[command(subcommand)]
    Job(JobCommand),
}

#[derive(Subcommand)]
enum JobCommand {
    /// Queue a Predict on strings (as `predict` takes them) and print the job id; with
    /// --wait, wait for it and print its outputs.
    Submit {
        #[command(flatten)]
        predict: PredictArgs,
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value_t = 600)]
        timeout_seconds: u64,
    },
    /// The job's state, and its outputs or error once it has ended.
    Get {
        job_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Wait until the job ends (or the timeout passes), then print it as `get` does.
    Wait {
        job_id: String,
        #[arg(long, default_value_t = 600)]
        timeout_seconds: u64,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job that has not started.
    Cancel { job_id: String },
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// Send a share of the unpinned traffic to the canary label's version; with --auto,
    /// the server raises it step by step, promotes at 100 % or rolls back by itself.
    Start(RolloutStartArgs),
    /// The rollout and the comparison its last decision was based on.
    Status { model: String },
    /// Move the stable label to the canary's version now, and end the rollout.
    Promote { model: String },
    /// All traffic back to stable, and end the rollout; on a rollout that already ended,
    /// forget it (unpinned requests go to the latest version again).
    Abort { model: String },
}

#[derive(clap::Args)]
struct RolloutStartArgs {
    model: String,
    /// Share of the requests that name neither a version nor a label, 0-100.
    #[arg(long)]
    percent: u32,
    #[arg(long, default_value = "canary")]
    canary_label: String,
    #[arg(long, default_value = "stable")]
    stable_label: String,
    /// Let the server analyse and step the rollout.
    #[arg(long)]
    auto: bool,
    #[arg(long, default_value_t = 10)]
    step_percent: u32,
    #[arg(long, default_value_t = 60.0)]
    interval_seconds: f64,
    #[arg(long, default_value_t = 200)]
    min_requests: u64,
    #[arg(long, default_value_t = 0.01)]
    max_error_rate: f64,
    #[arg(long, default_value_t = 1.5)]
    max_p99_ratio: f64,
}

#[derive(clap::Args)]
struct StatusArgs {
    model: String,
    #[arg(long)]
    version: Option<i64>,
}

#[derive(clap::Args)]
struct MetadataArgs {
    model: String,
    #[command(flatten)]
    which: Which,
}

#[derive(clap::Args)]
struct PredictArgs {
    model: String,
    texts: Vec<String>,
    #[arg(long = "pair")]
    pairs: Vec<String>,
    #[command(flatten)]
    which: Which,
    #[arg(long, default_value = "")]
    signature: String,
    /// Print the outputs as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ReloadConfigArgs {
    file: PathBuf,
}

#[derive(clap::Args)]
struct SetLabelArgs {
    model: String,
    /// LABEL=VERSION
    assignment: String,
    #[arg(long, default_value = "models.config")]
    config: PathBuf,
}

#[derive(clap::Args)]
struct PushArgs {
    /// The version folder to deploy (config.json, model.safetensors, ...).
    source: PathBuf,
    /// The model's base path in the repository: a folder (model_repo/symptom_ner) or a
    /// prefix in object storage (s3://bucket/models/symptom_ner, gs://..., az://...), with
    /// credentials from the standard variables (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...).
    base_path: String,
    /// The version number (default: one more than the highest there).
    #[arg(long)]
    version: Option<i64>,
    /// Wait until the server reports the version AVAILABLE (or failed).
    #[arg(long)]
    wait: bool,
    /// The model's name on the server (default: the base path's folder name).
    #[arg(long)]
    model: Option<String>,
}

fn spec(model: &str, which: &Which, signature: &str) -> ModelSpec {
    ModelSpec {
        name: model.to_string(),
        signature_name: signature.to_string(),
        version_choice: match (&which.version, &which.label) {
            (Some(v), _) => Some(VersionChoice::Version(*v)),
            (None, Some(l)) => Some(VersionChoice::VersionLabel(l.clone())),
            (None, None) => None,
        },
    }
}

/// The error for a failed RPC: its status code and message.
fn rpc_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", status.code(), status.message())
}

/// The version number a response's model spec names (0 when it names none).
fn served_version(model_spec: Option<&ModelSpec>) -> i64 {
    match model_spec.and_then(|s| s.version_choice.as_ref()) {
        Some(VersionChoice::Version(v)) => *v,
        _ => 0,
    }
}

async fn channel(server: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(server.to_string())?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {server}"))
}

const STATES: [(i32, &str); 6] = [
    (0, "UNKNOWN"),
    (10, "START"),
    (20, "LOADING"),
    (30, "AVAILABLE"),
    (40, "UNLOADING"),
    (50, "END"),
];

fn state_name(state: i32) -> &'static str {
    STATES
        .iter()
        .find(|(n, _)| *n == state)
        .map_or("?", |(_, s)| s)
}

/// (version, state, error message) of each version of `model` the server knows.
async fn versions(
    server: &str,
    model: &str,
    version: Option<i64>,
) -> anyhow::Result<Vec<(i64, i32, String)>> {
    let mut client = ModelServiceClient::new(channel(server).await?);
    let which = Which {
        version,
        label: None,
    };
    let response = client
        .get_model_status(GetModelStatusRequest {
            model_spec: Some(spec(model, &which, "")),
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    Ok(response
        .model_version_status
        .into_iter()
        .map(|s| {
            (
                s.version,
                s.state,
                s.status.map(|s| s.error_message).unwrap_or_default(),
            )
        })
        .collect())
}

fn print_tensor(name: &str, tensor: &Tensor) {
    let shape: Vec<String> = tensor.shape().iter().map(|d| d.to_string()).collect();
    let values: Vec<String> = match tensor.data() {
        TensorData::Float(v) => v.iter().map(|x| format!("{x:.4}")).collect(),
        TensorData::Double(v) => v.iter().map(|x| format!("{x:.4}")).collect(),
        TensorData::Int32(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::Int64(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::Bool(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::String(v) => v
            .iter()
            .map(|x| format!("{:?}", String::from_utf8_lossy(x)))
            .collect(),
    };
    let shown = if values.len() > 12 {
        format!("{} … ({} values)", values[..12].join(", "), values.len())
    } else {
        values.join(", ")
    };
    println!("{name} [{}]: {shown}", shape.join(","));
}

/// Prints each tensor of a signature's inputs or outputs with its dtype and shape.
fn describe(tensors: HashMap<String, TensorInfo>) {
    let sorted: BTreeMap<_, _> = tensors.into_iter().collect();
    for (n, info) in sorted {
        let dims: Vec<String> = info
            .tensor_shape
            .iter()
            .flat_map(|s| s.dim.iter().map(|d| d.size.to_string()))
            .collect();
        println!(
            "    {n}: {} [{}]",
            candle_serving::tensor::proto_dtype_name(info.dtype),
            dims.join(",")
        );
    }
}

fn tensor_json(tensor: &Tensor) -> serde_json::Value {
    let flat: Vec<serde_json::Value> = match tensor.data() {
        TensorData::Float(v) => v.iter().map(|&x| serde_json::json!(x)).collect(),
        TensorData::Double(v) => v.iter().map(|&x| serde_json::json!(x)).collect(),
        TensorData::Int32(v) => v.iter().map(|&x| serde_json::json!(x)).collect(),
        TensorData::Int64(v) => v.iter().map(|&x| serde_json::json!(x)).collect(),
        TensorData::Bool(v) => v.iter().map(|&x| serde_json::json!(x)).collect(),
        TensorData::String(v) => v
            .iter()
            .map(|x| serde_json::json!(String::from_utf8_lossy(x)))
            .collect(),
    };
    serde_json::json!({ "shape": tensor.shape(), "values": flat })
}

fn read_config(file: &Path) -> anyhow::Result<ModelServerConfig> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok(text_format::parse(
        "tensorflow.serving.ModelServerConfig",
        &text,
        &file.display().to_string(),
    )?)
}

async fn reload(server: &str, config: ModelServerConfig) -> anyhow::Result<()> {
    let mut client = ModelServiceClient::new(channel(server).await?);
    let mut request = tonic::Request::new(ReloadConfigRequest {
        config: Some(config),
        metric_names: vec![],
    });
    request.set_timeout(Duration::from_secs(120));
    let response = client
        .handle_reload_config_request(request)
        .await
        .map_err(rpc_error)?
        .into_inner();
    match response.status {
        Some(s) if s.error_code != 0 => bail!(
            "the server rejected the config (error code {}): {}",
            s.error_code,
            s.error_message
        ),
        _ => Ok(()),
    }
}

/// Copies `src` into `dst` file by file, fsyncing each file.
fn copy_tree(src: &Path, dst: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&from, &to)?;
        } else {
            std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
            std::fs::File::open(&to)?.sync_all()?;
        }
    }
    std::fs::File::open(dst)?.sync_all()?;
    Ok(())
}

/// Refuses a folder that is not a model version.
fn check_version_folder(source: &Path) -> anyhow::Result<()> {
    for required in ["config.json", "model.safetensors"] {
        if !source.join(required).is_file() {
            bail!(
                "{} is not a version folder: {required} is missing",
                source.display()
            );
        }
    }
    Ok(())
}

/// The version to push as: the one asked for, or one more than the highest there.
fn next_version(existing: &[i64], asked: Option<i64>) -> anyhow::Result<i64> {
    let version = asked.unwrap_or_else(|| existing.iter().max().copied().unwrap_or(0) + 1);
    if version <= 0 {
        bail!("versions are positive integers, not {version}");
    }
    Ok(version)
}

/// Uploads a version folder under `url` as a new version, file by file (multipart for big
/// files), then the completion marker, which tells servers the version is whole.
async fn upload_version(source: &Path, url: &url::Url, asked: Option<i64>) -> anyhow::Result<i64> {
    use object_store::{ObjectStoreExt, PutPayload};
    use tokio::io::AsyncWriteExt;
    let (store, prefix) = remote::open(url).map_err(anyhow::Error::msg)?;
    let listed = store
        .list_with_delimiter(Some(&prefix))
        .await
        .with_context(|| format!("cannot list {url}"))?;
    let existing: Vec<i64> = listed
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename())
        .filter_map(|name| candle_serving::source::parse_version(std::ffi::OsStr::new(name)))
        .collect();
    let version = next_version(&existing, asked)?;
    if existing.contains(&version) {
        bail!("{url}/{version} already exists; versions are immutable, push a new number");
    }
    let root = prefix.join(version.to_string());
    let mut files = Vec::new();
    collect_files(source, &mut Vec::new(), &mut files)?;
    for relative in &files {
        let location = relative
            .iter()
            .fold(root.clone(), |l, part| l.join(part.as_str()));
        let local = relative
            .iter()
            .fold(source.to_path_buf(), |p, part| p.join(part));
        let mut file = tokio::fs::File::open(&local)
            .await
            .with_context(|| format!("cannot read {}", local.display()))?;
        let mut writer = object_store::buffered::BufWriter::new(store.clone(), location.clone());
        tokio::io::copy(&mut file, &mut writer)
            .await
            .with_context(|| format!("uploading {} to {url}", local.display()))?;
        writer
            .shutdown()
            .await
            .with_context(|| format!("uploading {} to {url}", local.display()))?;
    }
    store
        .put(&root.clone().join(remote::MARKER), PutPayload::new())
        .await
        .with_context(|| format!("writing the completion marker of {url}/{version}"))?;
    Ok(version)
}

/// The files below `dir`, as path components relative to it.
fn collect_files(
    dir: &Path,
    at: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| anyhow::anyhow!("{n:?} is not a UTF-8 file name"))?;
        at.push(name);
        if entry.file_type()?.is_dir() {
            collect_files(&entry.path(), at, out)?;
        } else {
            out.push(at.clone());
        }
        at.pop();
    }
    Ok(())
}

/// Copies a version folder into `base` atomically as a new version; returns its number.
fn copy_version(source: &Path, base: &Path, version: Option<i64>) -> anyhow::Result<i64> {
    std::fs::create_dir_all(base).with_context(|| format!("cannot create {}", base.display()))?;
    let existing: Vec<i64> = std::fs::read_dir(base)?
        .flatten()
        .filter_map(|e| candle_serving::source::parse_version(&e.file_name()))
        .collect();
    let version = next_version(&existing, version)?;
    let target = base.join(version.to_string());
    if target.exists() {
        bail!(
            "{} already exists; versions are immutable, push a new number",
            target.display()
        );
    }
    let tmp = base.join(format!(".push-{version}-{}", std::process::id()));
    let result = copy_tree(source, &tmp).and_then(|()| {
        std::fs::rename(&tmp, &target)
            .with_context(|| format!("renaming into {}", target.display()))?;
        std::fs::File::open(base)?.sync_all()?;
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map(|()| version)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Status(args) => status(&cli.server, args).await,
        Command::Metadata(args) => metadata(&cli.server, args).await,
        Command::Predict(args) => predict(&cli.server, args).await,
        Command::ReloadConfig(args) => reload_config(&cli.server, args).await,
        Command::SetLabel(args) => set_label(&cli.server, args).await,
        Command::Push(args) => push(&cli.server, args).await,
        Command::Rollout(command) => rollout(&cli.server, command).await,
        Command::Job(command) => job(&cli.server, command).await,
    }
}

/// Prints every version of a model with its state and, for a failed load, why.
async fn status(server: &str, args: StatusArgs) -> anyhow::Result<()> {
    let StatusArgs { model, version } = args;
    for (v, state, error) in versions(server, &model, version).await? {
        let error = if error.is_empty() {
            String::new()
        } else {
            format!(": {error}")
        };
        println!("{model} version {v}: {}{error}", state_name(state));
    }
    Ok(())
}

/// Prints the signatures a model version takes and produces.
async fn metadata(server: &str, args: MetadataArgs) -> anyhow::Result<()> {
    let MetadataArgs { model, which } = args;
    let mut client = PredictionServiceClient::new(channel(server).await?);
    let response = client
        .get_model_metadata(GetModelMetadataRequest {
            model_spec: Some(spec(&model, &which, "")),
            metadata_field: vec!["signature_def".into()],
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let version = served_version(response.model_spec.as_ref());
    let any = response
        .metadata
        .get("signature_def")
        .context("no signature_def in the response")?;
    let map = SignatureDefMap::decode(any.value.as_slice())?;
    println!("{model} version {version}");
    let signatures: BTreeMap<_, _> = map.signature_def.into_iter().collect();
    for (name, sig) in signatures {
        println!("signature {name} ({})", sig.method_name);
        println!("  inputs:");
        describe(sig.inputs);
        println!("  outputs:");
        describe(sig.outputs);
    }
    Ok(())
}

/// The PredictRequest of `predict` (and `job submit`): strings as `text` and `text_pair`.
fn predict_request(args: PredictArgs) -> anyhow::Result<(String, PredictRequest, bool)> {
    let PredictArgs {
        model,
        texts,
        pairs,
        which,
        signature,
        json,
    } = args;
    if texts.is_empty() {
        bail!("give at least one text");
    }
    let mut inputs = HashMap::new();
    inputs.insert(
        "text".to_string(),
        tensor_to_proto(&Tensor::strings(&texts)),
    );
    if !pairs.is_empty() {
        inputs.insert(
            "text_pair".to_string(),
            tensor_to_proto(&Tensor::strings(&pairs)),
        );
    }
    let request = PredictRequest {
        model_spec: Some(spec(&model, &which, &signature)),
        inputs,
        ..Default::default()
    };
    Ok((model, request, json))
}

/// Runs a model on strings (`text`, and `text_pair` with --pair) and prints its outputs.
async fn predict(server: &str, args: PredictArgs) -> anyhow::Result<()> {
    let (model, request, json) = predict_request(args)?;
    let mut client =
        PredictionServiceClient::new(channel(server).await?).max_decoding_message_size(1 << 30);
    let response = client
        .predict(request)
        .await
        .map_err(rpc_error)?
        .into_inner();
    print_response(&model, &response, json)
}

/// Prints a PredictResponse's outputs (as JSON with `json`).
fn print_response(model: &str, response: &PredictResponse, json: bool) -> anyhow::Result<()> {
    let version = served_version(response.model_spec.as_ref());
    let outputs: BTreeMap<String, Tensor> = response
        .outputs
        .iter()
        .map(|(k, v)| Ok((k.clone(), tensor_from_proto(v, &mut Budget::unbounded())?)))
        .collect::<anyhow::Result<_>>()?;
    if json {
        let body: serde_json::Map<String, serde_json::Value> = outputs
            .iter()
            .map(|(k, t)| (k.clone(), tensor_json(t)))
            .collect();
        println!(
            "{}",
            serde_json::json!({ "model": model, "version": version, "outputs": body })
        );
    } else {
        println!("{model} version {version}");
        for (name, tensor) in &outputs {
            print_tensor(name, tensor);
        }
    }
    Ok(())
}

/// One job command over `candle_serving.jobs.v1.JobService`.
async fn job(server: &str, command: JobCommand) -> anyhow::Result<()> {
    use candle_serving::proto::candle_serving::jobs::v1::{
        job_service_client::JobServiceClient, JobRequest,
    };
    let mut client =
        JobServiceClient::new(channel(server).await?).max_decoding_message_size(1 << 30);
    let waiting = |job_id: String, seconds: u64| {
        let mut request = tonic::Request::new(JobRequest { job_id });
        request.set_timeout(Duration::from_secs(seconds.max(1)));
        request
    };
    let (job, json) = match command {
        JobCommand::Submit {
            predict,
            wait,
            timeout_seconds,
        } => {
            let (_, request, json) = predict_request(predict)?;
            let job = client
                .submit(request)
                .await
                .map_err(rpc_error)?
                .into_inner();
            if !wait {
                println!("{}", job.job_id);
                return Ok(());
            }
            let job = client
                .wait(waiting(job.job_id, timeout_seconds))
                .await
                .map_err(rpc_error)?
                .into_inner();
            (job, json)
        }
        JobCommand::Get { job_id, json } => (
            client
                .get(JobRequest { job_id })
                .await
                .map_err(rpc_error)?
                .into_inner(),
            json,
        ),
        JobCommand::Wait {
            job_id,
            timeout_seconds,
            json,
        } => (
            client
                .wait(waiting(job_id, timeout_seconds))
                .await
                .map_err(rpc_error)?
                .into_inner(),
            json,
        ),
        JobCommand::Cancel { job_id } => (
            client
                .cancel(JobRequest { job_id })
                .await
                .map_err(rpc_error)?
                .into_inner(),
            false,
        ),
    };
    print_job(&job, json)
}

fn print_job(
    job: &candle_serving::proto::candle_serving::jobs::v1::Job,
    json: bool,
) -> anyhow::Result<()> {
    use candle_serving::proto::candle_serving::jobs::v1::{job::Result as JobResult, JobState};
    let model = job.model_spec.as_ref().map_or("", |s| s.name.as_str());
    let state = JobState::try_from(job.state).map_or("UNKNOWN", |s| s.as_str_name());
    match &job.result {
        Some(JobResult::Response(response)) => {
            if !json {
                println!("job {}: {state}", job.job_id);
            }
            print_response(model, response, json)
        }
        Some(JobResult::ResultJson(body)) => {
            println!("job {}: {state} (model {model})\n{body}", job.job_id);
            Ok(())
        }
        None if state == "FAILED" => bail!("job {}: FAILED: {}", job.job_id, job.error_message),
        None => {
            println!("job {}: {state} (model {model})", job.job_id);
            Ok(())
        }
    }
}

/// Sends a models.config file to HandleReloadConfigRequest.
async fn reload_config(server: &str, args: ReloadConfigArgs) -> anyhow::Result<()> {
    let config = read_config(&args.file)?;
    reload(server, config).await?;
    println!("the server now serves {}", args.file.display());
    Ok(())
}

/// Points a version label at a version (or removes it) in the config file, through the server.
async fn set_label(server: &str, args: SetLabelArgs) -> anyhow::Result<()> {
    let SetLabelArgs {
        model,
        assignment,
        config,
    } = args;
    let (label, version) = assignment
        .split_once('=')
        .context("write the label as LABEL=VERSION (LABEL= removes it)")?;
    if !candle_serving::config::model_server_config::is_valid_label(label) {
        bail!("`{label}` is not a valid label: labels match [a-zA-Z0-9_]+");
    }
    let mut proto = read_config(&config)?;
    let Some(model_server_config::Config::ModelConfigList(list)) = proto.config.as_mut() else {
        bail!("{} has no model_config_list", config.display());
    };
    let entry = list
        .config
        .iter_mut()
        .find(|m| m.name == model)
        .with_context(|| format!("{} has no model `{model}`", config.display()))?;
    if version.is_empty() {
        entry.version_labels.remove(label);
    } else {
        let v: i64 = version
            .parse()
            .with_context(|| format!("`{version}` is not a version number"))?;
        entry.version_labels.insert(label.to_string(), v);
    }
    reload(server, proto.clone()).await?;
    let text = text_format::format("tensorflow.serving.ModelServerConfig", &proto);
    candle_serving::util::write_atomically(&config, text.as_bytes())
        .with_context(|| format!("cannot write {}", config.display()))?;
    if version.is_empty() {
        println!(
            "{model}: label `{label}` removed; {} updated",
            config.display()
        );
    } else {
        println!(
            "{model}: `{label}` → version {version}; {} updated",
            config.display()
        );
    }
    Ok(())
}

/// Sends one rollout command over gRPC and prints the rollout as the server reports it.
async fn rollout(server: &str, command: RolloutCommand) -> anyhow::Result<()> {
    use candle_serving::proto::candle_serving::rollout::v1 as pb;
    let mut client = pb::rollout_service_client::RolloutServiceClient::new(channel(server).await?);
    let status = match command {
        RolloutCommand::Start(a) => {
            client
                .start_rollout(pb::StartRolloutRequest {
                    model: a.model,
                    canary_label: a.canary_label,
                    stable_label: a.stable_label,
                    canary_percent: a.percent,
                    auto: a.auto.then_some(pb::AutoPolicy {
                        step_percent: a.step_percent,
                        interval_seconds: a.interval_seconds,
                        min_requests: a.min_requests,
                        max_error_rate: a.max_error_rate,
                        max_p99_ratio: a.max_p99_ratio,
                    }),
                })
                .await
        }
        RolloutCommand::Status { model } => {
            client.get_rollout(pb::GetRolloutRequest { model }).await
        }
        RolloutCommand::Promote { model } => {
            client
                .promote_rollout(pb::PromoteRolloutRequest { model })
                .await
        }
        RolloutCommand::Abort { model } => {
            client
                .abort_rollout(pb::AbortRolloutRequest { model })
                .await
        }
    }
    .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
    .into_inner();
    match status.phase.as_str() {
        "PROGRESSING" => println!(
            "{}: PROGRESSING — {}% of unpinned requests to `{}` (version {}), the rest to `{}` (version {})",
            status.model,
            status.canary_percent,
            status.canary_label,
            status.canary_version,
            status.stable_label,
            status.stable_version
        ),
        "PROMOTED" => println!(
            "{}: PROMOTED — `{}` names version {}; unpinned requests follow it",
            status.model, status.stable_label, status.canary_version
        ),
        phase => println!(
            "{}: {phase} — unpinned requests follow `{}` (version {}); `{}` still names version {}",
            status.model,
            status.stable_label,
            status.stable_version,
            status.canary_label,
            status.canary_version
        ),
    }
    if !status.reason.is_empty() {
        println!("  reason: {}", status.reason);
    }
    if let Some(a) = &status.auto {
        println!(
            "  auto: +{}% every {} s once the canary has {} requests; roll back above error rate {} or p99 ratio {}",
            a.step_percent, a.interval_seconds, a.min_requests, a.max_error_rate, a.max_p99_ratio
        );
    }
    if let Some(a) = &status.last_analysis {
        let side = |s: &Option<pb::SideFigures>| {
            s.as_ref().map_or(String::from("-"), |s| {
                format!(
                    "version {}: {} requests, {} errors ({:.4}), p99 {:.2} ms",
                    s.version, s.requests, s.errors, s.error_rate, s.p99_ms
                )
            })
        };
        println!("  last decision: {} ({})", a.decision, a.reason);
        println!("    stable {}", side(&a.stable));
        println!("    canary {}", side(&a.canary));
    }
    Ok(())
}

/// Deploys a version folder atomically and, with --wait, waits until the server serves it.
async fn push(server: &str, args: PushArgs) -> anyhow::Result<()> {
    let PushArgs {
        source,
        base_path,
        version,
        wait,
        model,
    } = args;
    check_version_folder(&source)?;
    let cwd = std::env::current_dir()?;
    let (version, target) = match BasePath::parse(&base_path, &cwd).map_err(anyhow::Error::msg)? {
        BasePath::Local(base) => {
            let version = copy_version(&source, &base, version)?;
            (
                version,
                base.join(version.to_string()).display().to_string(),
            )
        }
        BasePath::Remote(url) => {
            let version = upload_version(&source, &url, version).await?;
            (version, format!("{url}/{version}"))
        }
    };
    let renamed = Instant::now();
    println!("pushed {} as {target}", source.display());
    if wait {
        let model = model.unwrap_or_else(|| {
            base_path
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string()
        });
        wait_until_available(server, &model, version, renamed).await?;
    }
    Ok(())
}

/// Polls the server until `version` of `model` is AVAILABLE (or fails, or 10 minutes pass).
async fn wait_until_available(
    server: &str,
    model: &str,
    version: i64,
    renamed: Instant,
) -> anyhow::Result<()> {
    loop {
        let found = versions(server, model, None).await.unwrap_or_default();
        match found.iter().find(|(v, _, _)| *v == version) {
            Some((_, 30, _)) => {
                println!(
                    "{model} version {version} is AVAILABLE ({} ms after the rename)",
                    renamed.elapsed().as_millis()
                );
                return Ok(());
            }
            Some((_, 50, error)) => bail!("{model} version {version} failed to load: {error}"),
            _ if renamed.elapsed() > Duration::from_secs(600) => {
                bail!("{model} version {version} is not AVAILABLE after 10 minutes")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
