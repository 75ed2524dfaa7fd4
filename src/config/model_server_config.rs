//! `models.config`: which models to serve, where their versions live, which versions to
//! load and which labels point where. Parsed as `tensorflow.serving.ModelServerConfig` text
//! format, then checked as a whole so that a config is either entirely valid or rejected
//! with a message naming the model, its line and the problem.
//! Parsing and validation only: it never reads a base path or loads a version (the source
//! and the manager do).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::text_format::{self, line_column};
use crate::proto::tensorflow::serving::{
    file_system_storage_path_source_config::{servable_version_policy, ServableVersionPolicy},
    model_server_config, ModelConfig, ModelServerConfig,
};

/// The only `model_platform` served here. An empty platform means this one too.
pub const PLATFORM: &str = "candle";

/// Which of the versions found on disk to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The `n` highest versions.
    Latest(usize),
    All,
    /// Exactly these versions, once they exist.
    Specific(BTreeSet<i64>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

impl VersionPolicy {
    /// The versions to serve out of those that can be loaded.
    pub fn select(&self, candidates: &BTreeSet<i64>) -> BTreeSet<i64> {
        match self {
            VersionPolicy::Latest(n) => candidates.iter().rev().take(*n).copied().collect(),
            VersionPolicy::All => candidates.clone(),
            VersionPolicy::Specific(wanted) => candidates.intersection(wanted).copied().collect(),
        }
    }

    fn to_proto(&self) -> ServableVersionPolicy {
        use servable_version_policy::{All, Latest, PolicyChoice, Specific};
        let choice = match self {
            VersionPolicy::Latest(n) => PolicyChoice::Latest(Latest {
                num_versions: *n as u32,
            }),
            VersionPolicy::All => PolicyChoice::All(All {}),
            VersionPolicy::Specific(v) => PolicyChoice::Specific(Specific {
                versions: v.iter().copied().collect(),
            }),
        };
        ServableVersionPolicy {
            policy_choice: Some(choice),
        }
    }
}

/// Where a model's version folders live.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BasePath {
    /// An absolute folder on this machine.
    Local(PathBuf),
    /// A prefix in object storage (`s3://bucket/prefix/model`, `gs://...`, `az://...`),
    /// mirrored into the model cache and served from there.
    Remote(url::Url),
}

impl std::fmt::Display for BasePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BasePath::Local(path) => write!(f, "{}", path.display()),
            BasePath::Remote(url) => write!(f, "{url}"),
        }
    }
}

/// The URL schemes of object storage a base path may use (the `object_store` crate's names).
pub const REMOTE_SCHEMES: &[&str] = &["s3", "s3a", "gs", "az", "azure", "abfs", "abfss"];

impl BasePath {
    /// Reads a `base_path` as written: a URL (`scheme://...`) or a path, relative paths
    /// anchored at `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<BasePath, String> {
        let Some((scheme, _)) = text.split_once("://").filter(|(scheme, _)| {
            let mut bytes = scheme.bytes();
            bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
                && bytes.all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
        }) else {
            return Ok(BasePath::Local(base_dir.join(text)));
        };
        let url = url::Url::parse(text)
            .map_err(|e| format!("base_path `{text}` is not a valid URL: {e}"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "file" {
            return url
                .to_file_path()
                .map(BasePath::Local)
                .map_err(|()| format!("base_path `{text}` is not a local file URL"));
        }
        if !REMOTE_SCHEMES.contains(&scheme.as_str()) {
            return Err(format!(
                "base_path `{text}`: scheme `{scheme}` is not supported; use a folder, s3://, gs:// or az://"
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("base_path `{text}` names no bucket or container"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "base_path `{text}`: query strings and fragments are not part of an object path"
            ));
        }
        let mut url = url;
        let trimmed = url.path().trim_end_matches('/').to_string();
        url.set_path(&trimmed);
        Ok(BasePath::Remote(url))
    }

    /// The local folder, for a local base path.
    pub fn local(&self) -> Option<&Path> {
        match self {
            BasePath::Local(path) => Some(path),
            BasePath::Remote(_) => None,
        }
    }
}

/// One model, validated: an absolute base path, a policy, and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDef {
    pub name: String,
    pub base_path: BasePath,
    pub policy: VersionPolicy,
    pub labels: BTreeMap<String, i64>,
}

/// A whole, valid model configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelsConfig {
    pub models: Vec<ModelDef>,
}

/// A config that cannot be served. The message says where (file, line, model) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<text_format::SyntaxError> for ConfigError {
    fn from(e: text_format::SyntaxError) -> Self {
        ConfigError(e.to_string())
    }
}

/// Whether `label` is a valid version label name: `[a-zA-Z0-9_]+`.
pub fn is_valid_label(label: &str) -> bool {
    !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl ModelsConfig {
    /// Reads a `models.config` file; relative base paths are relative to its folder.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        Self::from_text(&text, dir, &path.display().to_string())
    }

    /// Parses text format. `origin` names the text in messages; `base_dir` anchors relative
    /// base paths.
    pub fn from_text(text: &str, base_dir: &Path, origin: &str) -> Result<Self, ConfigError> {
        let proto: ModelServerConfig =
            text_format::parse("tensorflow.serving.ModelServerConfig", text, origin)?;
        Self::from_proto(&proto, base_dir, origin, Some(text))
    }

    /// Validates a config message (from a file or a ReloadConfig request). With the source
    /// `text` at hand, messages also give the line where each model is named.
    pub fn from_proto(
        proto: &ModelServerConfig,
        base_dir: &Path,
        origin: &str,
        text: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let list = match &proto.config {
            None => return Ok(ModelsConfig::default()),
            Some(model_server_config::Config::CustomModelConfig(_)) => {
                return Err(ConfigError(format!(
                    "{origin}: custom_model_config is not supported; list the models in model_config_list"
                )))
            }
            Some(model_server_config::Config::ModelConfigList(list)) => list,
        };
        let base_dir = absolute(base_dir);
        let mut seen = BTreeSet::new();
        let mut models = Vec::with_capacity(list.config.len());
        for (index, model) in list.config.iter().enumerate() {
            let at = |message: String| {
                let place = match text.and_then(|t| line_of_name(t, &model.name)) {
                    Some(line) => format!("{origin}:{line}"),
                    None => origin.to_string(),
                };
                let who = if model.name.is_empty() {
                    format!("config #{}", index + 1)
                } else {
                    format!("model `{}`", model.name)
                };
                ConfigError(format!("{place}: {who}: {message}"))
            };
            let def = validate_model(model, &base_dir).map_err(at)?;
            if !seen.insert(def.name.clone()) {
                return Err(at("is configured twice; model names must be unique".into()));
            }
            if model.logging_config.is_some() {
                tracing::warn!(model = %def.name, "logging_config is accepted but request logging is not implemented; ignored");
            }
            models.push(def);
        }
        Ok(ModelsConfig { models })
    }

    /// Single-model mode: `--model_name` and `--model_base_path`.
    pub fn single(name: &str, base_path: &Path) -> Result<Self, ConfigError> {
        let proto = ModelConfig {
            name: name.to_string(),
            base_path: base_path.display().to_string(),
            model_platform: PLATFORM.to_string(),
            ..Default::default()
        };
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let def = validate_model(&proto, &cwd)
            .map_err(|m| ConfigError(format!("--model_name {name}: {m}")))?;
        Ok(ModelsConfig { models: vec![def] })
    }

    pub fn get(&self, name: &str) -> Option<&ModelDef> {
        self.models.iter().find(|m| m.name == name)
    }

    /// Back to the message form, for clients that edit and resend a config.
    pub fn to_proto(&self) -> ModelServerConfig {
        let config = self
            .models
            .iter()
            .map(|m| ModelConfig {
                name: m.name.clone(),
                base_path: m.base_path.to_string(),
                model_platform: PLATFORM.to_string(),
                model_version_policy: Some(m.policy.to_proto()),
                version_labels: m.labels.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                ..Default::default()
            })
            .collect();
        ModelServerConfig {
            config: Some(model_server_config::Config::ModelConfigList(
                crate::proto::tensorflow::serving::ModelConfigList { config },
            )),
        }
    }
}

fn absolute(dir: &Path) -> PathBuf {
    if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(dir))
            .unwrap_or_else(|_| dir.to_path_buf())
    }
}

fn validate_model(model: &ModelConfig, base_dir: &Path) -> Result<ModelDef, String> {
    if model.name.is_empty() {
        return Err("`name` is empty".into());
    }
    if model.base_path.is_empty() {
        return Err("`base_path` is empty".into());
    }
    if !model.model_platform.is_empty() && model.model_platform != PLATFORM {
        return Err(format!(
            "model_platform \"{}\" is not supported; this server serves model_platform \"{PLATFORM}\"",
            model.model_platform
        ));
    }
    let base_path = BasePath::parse(&model.base_path, base_dir)?;
    let policy = match model
        .model_version_policy
        .as_ref()
        .and_then(|p| p.policy_choice.as_ref())
    {
        None => VersionPolicy::default(),
        Some(servable_version_policy::PolicyChoice::Latest(l)) => {
            VersionPolicy::Latest(l.num_versions.max(1) as usize)
        }
        Some(servable_version_policy::PolicyChoice::All(_)) => VersionPolicy::All,
        Some(servable_version_policy::PolicyChoice::Specific(s)) => {
            if s.versions.is_empty() {
                return Err("model_version_policy `specific` lists no versions".into());
            }
            if let Some(v) = s.versions.iter().find(|&&v| v <= 0) {
                return Err(format!(
                    "model_version_policy `specific` lists version {v}; versions are positive integers"
                ));
            }
            VersionPolicy::Specific(s.versions.iter().copied().collect())
        }
    };
    let mut labels = BTreeMap::new();
    for (label, &version) in &model.version_labels {
        if !is_valid_label(label) {
            return Err(format!(
                "version label `{label}` is not valid; labels match [a-zA-Z0-9_]+"
            ));
        }
        if version <= 0 {
            return Err(format!(
                "version label `{label}` points at version {version}; versions are positive integers"
            ));
        }
        if let VersionPolicy::Specific(wanted) = &policy {
            if !wanted.contains(&version) {
                return Err(format!(
                    "version label `{label}` points at version {version}, which the `specific` policy {wanted:?} never loads"
                ));
            }
        }
        labels.insert(label.clone(), version);
    }
    Ok(ModelDef {
        name: model.name.clone(),
        base_path,
        policy,
        labels,
    })
}

/// The line where `name` appears as a quoted string, to point an error at its model.
fn line_of_name(text: &str, name: &str) -> Option<usize> {
    if name.is_empty() {
        return None;
    }
    [format!("\"{name}\""), format!("'{name}'")]
        .iter()
        .filter_map(|quoted| text.find(quoted.as_str()))
        .min()
        .map(|offset| line_column(text, offset).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModelsConfig, ConfigError> {
        ModelsConfig::from_text(text, Path::new("/srv"), "models.config")
    }

    // The three shapes of models.config in seed 004, with the platform changed to ours.
    const SEED_COMMAS: &str = r#"model_config_list: {
  config: {
    name: "cv_sod",
    base_path: "/models/cv_sod",
    model_platform: "candle"
  },
  config: {
    name: "lstm",
    base_path: "/models/lstm",
    model_platform: "candle"
  },
}"#;

    const SEED_LABELS: &str = r#"model_config_list: {
  config: {
    name: "cv_sod",
    base_path: "/models/cv_sod",
    model_platform: "candle"
    model_version_policy:{
      all:{}
    }
    version_labels {
      key: 'stable'
      value: 16323123125
    }
    version_labels {
      key: 'abtest1'
      value: 16324235421
    }
  },
  config: {
    name: "lstm",
    base_path: "/models/lstm",
    model_platform: "candle"
  },
}"#;

    const SEED_BRACES: &str = r#"model_config_list {
  config {
    name: "linear"
    base_path: "/models/mutimodel/linear_model"
    model_platform: "candle"
    model_version_policy {
      specific {
        versions: 1
        versions: 2
      }
    }
    version_labels {
      key: "stable"
      value: 1
    }
  }
  config {
    name: "textcnn"
    base_path: "/models/mutimodel/textcnn_model"
    model_platform: "candle"
  }
  config {
    name: "router"
    base_path: "/models/mutimodel/router_model"
    model_platform: "candle"
  }
}"#;

    #[test]
    fn seed_examples_parse_as_written() {
        let a = parse(SEED_COMMAS).unwrap();
        assert_eq!(a.models.len(), 2);
        assert_eq!(a.models[1].name, "lstm");
        assert_eq!(a.models[1].policy, VersionPolicy::Latest(1));

        let b = parse(SEED_LABELS).unwrap();
        assert_eq!(b.models[0].policy, VersionPolicy::All);
        assert_eq!(b.models[0].labels["stable"], 16323123125);
        assert_eq!(b.models[0].labels["abtest1"], 16324235421);

        let c = parse(SEED_BRACES).unwrap();
        assert_eq!(c.models.len(), 3);
        assert_eq!(c.models[0].policy, VersionPolicy::Specific([1, 2].into()));
        assert_eq!(c.models[0].labels["stable"], 1);
        assert_eq!(
            c.models[0].base_path,
            BasePath::Local(PathBuf::from("/models/mutimodel/linear_model"))
        );
    }

    #[test]
    fn another_platform_is_rejected_naming_the_model_and_line() {
        let err = parse(&SEED_COMMAS.replacen("\"candle\"", "\"tensorflow\"", 1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "models.config:3: model `cv_sod`: model_platform \"tensorflow\" is not supported; this server serves model_platform \"candle\""
        );
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let broken = SEED_BRACES.replace("versions: 2", "versions: two");
        let err = parse(&broken).unwrap_err().to_string();
        assert!(err.starts_with("models.config:9:19: "), "{err}");
        let unknown = SEED_BRACES.replace(
            "base_path: \"/models/mutimodel/textcnn_model\"",
            "basepath: \"x\"",
        );
        let err = parse(&unknown).unwrap_err().to_string();
        assert!(err.starts_with("models.config:19:5: "), "{err}");
        assert!(err.contains("basepath"), "{err}");
    }

    #[test]
    fn relative_base_paths_are_relative_to_the_config_folder() {
        let cfg =
            parse(r#"model_config_list { config { name: "m" base_path: "repo/m" } }"#).unwrap();
        assert_eq!(
            cfg.models[0].base_path,
            BasePath::Local(PathBuf::from("/srv/repo/m"))
        );
        assert_eq!(cfg.models[0].policy, VersionPolicy::Latest(1));
    }

    #[test]
    fn object_storage_base_paths_are_urls() {
        let cfg = parse(
            r#"model_config_list { config { name: "m" base_path: "s3://models/prod/m/" }
               config { name: "g" base_path: "gs://b/g" } config { name: "f" base_path: "file:///srv/f" } }"#,
        )
        .unwrap();
        assert_eq!(cfg.models[0].base_path.to_string(), "s3://models/prod/m");
        assert!(cfg.models[0].base_path.local().is_none());
        assert_eq!(cfg.models[1].base_path.to_string(), "gs://b/g");
        // Dot segments are resolved by the URL parser: a prefix cannot climb out of its bucket.
        assert_eq!(
            BasePath::parse("s3://b/a/%2e%2e/../m", Path::new("/"))
                .unwrap()
                .to_string(),
            "s3://b/m"
        );
        assert_eq!(
            cfg.models[2].base_path,
            BasePath::Local(PathBuf::from("/srv/f"))
        );
        assert_eq!(
            cfg,
            ModelsConfig::from_proto(&cfg.to_proto(), Path::new("/"), "x", None).unwrap()
        );
        for (bad, why) in [
            ("hdfs://nn/m", "scheme `hdfs` is not supported"),
            ("s3:///m", "names no bucket"),
            ("s3://b/m?x=1", "query strings"),
        ] {
            let text =
                format!(r#"model_config_list {{ config {{ name: "m" base_path: "{bad}" }} }}"#);
            let err = parse(&text).unwrap_err().0;
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn semantic_errors() {
        let dup = r#"model_config_list { config { name: "m" base_path: "a" } config { name: "m" base_path: "b" } }"#;
        assert!(parse(dup).unwrap_err().0.contains("configured twice"));
        let label = r#"model_config_list { config { name: "m" base_path: "a" version_labels { key: "bad-label" value: 1 } } }"#;
        assert!(parse(label).unwrap_err().0.contains("[a-zA-Z0-9_]+"));
        let specific = r#"model_config_list { config { name: "m" base_path: "a"
            model_version_policy { specific { versions: 1 } } version_labels { key: "canary" value: 2 } } }"#;
        assert!(parse(specific).unwrap_err().0.contains("never loads"));
        let empty = r#"model_config_list { config { name: "m" base_path: "a" model_version_policy { specific { } } } }"#;
        assert!(parse(empty).unwrap_err().0.contains("lists no versions"));
        let no_path = r#"model_config_list { config { name: "m" } }"#;
        assert!(parse(no_path)
            .unwrap_err()
            .0
            .contains("`base_path` is empty"));
    }

    #[test]
    fn policies_select_versions() {
        let on_disk: BTreeSet<i64> = [1, 2, 5, 9].into();
        assert_eq!(VersionPolicy::Latest(1).select(&on_disk), [9].into());
        assert_eq!(VersionPolicy::Latest(2).select(&on_disk), [5, 9].into());
        assert_eq!(VersionPolicy::All.select(&on_disk), on_disk);
        assert_eq!(
            VersionPolicy::Specific([2, 3].into()).select(&on_disk),
            [2].into()
        );
    }

    #[test]
    fn round_trips_through_the_message() {
        let cfg = parse(SEED_BRACES).unwrap();
        let again = ModelsConfig::from_proto(&cfg.to_proto(), Path::new("/"), "x", None).unwrap();
        assert_eq!(cfg, again);
    }
}
