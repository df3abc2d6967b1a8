//! A model version's quality and fairness settings: the `quality.*` and
//! `fairness.*` config parameters, checked at load (a bad value fails the
//! load with the parameter named, like every other config error).

use std::time::Duration;

use serde::Serialize;
use switchyard_proto::inference::ModelConfig;

/// A tensor as the settings see it: its name and its dims without the batch dimension.
pub type Shape<'a> = (&'a str, &'a [i64]);

/// Most groups a fairness monitor keeps apart (`fairness.max_groups` is capped here).
pub const MAX_GROUPS_LIMIT: usize = 256;
/// Longest quality window (`quality.window_secs`): 30 days.
pub const MAX_WINDOW_SECS: u64 = 30 * 24 * 3600;

/// What the monitored output is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Class scores (or probabilities) per row: the prediction is the argmax.
    Classification,
    /// One value per row: the prediction is the row's first element.
    Regression,
}

/// Where a request's group comes from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Attribute {
    /// Element `index` of each row of input `tensor` (`input:features[7]`).
    Input {
        /// The input's name.
        tensor: String,
        /// Flat index within a row.
        index: usize,
    },
    /// A request parameter (`parameter:group`): one group for all its rows.
    Parameter(String),
}

/// Fairness settings (`fairness.*`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FairnessSettings {
    /// The protected attribute.
    pub attribute: Attribute,
    /// The favourable class of a classifier (argmax equals it), if given.
    pub favourable_class: Option<usize>,
    /// The favourable threshold: the favourable class's score (or a
    /// regressor's value) at or above it, if given.
    pub favourable_threshold: Option<f64>,
    /// The reference group; without one each group is compared with all the others.
    pub privileged: Option<String>,
    /// Groups kept apart; later ones are counted as `other`.
    pub max_groups: usize,
    /// Alert when a group's disparate impact ratio is below this...
    pub min_disparate_impact: f64,
    /// ... or above this.
    pub max_disparate_impact: f64,
    /// Alert when a group's statistical parity difference exceeds this in size.
    pub max_parity_difference: f64,
}

/// Quality settings of a model version.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QualitySettings {
    /// The output whose predictions are judged.
    pub output: String,
    /// Classification or regression.
    pub task: Task,
    /// Fraction of requests whose predictions are kept for joining, 0 to 1.
    pub sample_rate: f64,
    /// The sliding window the figures cover.
    #[serde(serialize_with = "secs")]
    pub window: Duration,
    /// Labelled rows (or a group's rows) the window needs before its figures alert.
    pub min_samples: u64,
    /// Alert below this accuracy (classifiers).
    pub min_accuracy: Option<f64>,
    /// Alert above this mean absolute error (regressors).
    pub max_mae: Option<f64>,
    /// Alert above this root mean squared error (regressors).
    pub max_rmse: Option<f64>,
    /// Alert above this expected calibration error (probability outputs).
    pub max_calibration_error: Option<f64>,
    /// Fairness monitoring, if a protected attribute is declared.
    pub fairness: Option<FairnessSettings>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

impl QualitySettings {
    /// The settings of a version whose config has `quality.*` or `fairness.*`
    /// parameters; `None` when it has neither (monitoring off).
    pub fn from_config(
        config: &ModelConfig,
        inputs: &[Shape<'_>],
        outputs: &[Shape<'_>],
    ) -> Result<Option<QualitySettings>, String> {
        let on = config
            .parameters
            .keys()
            .any(|k| k.starts_with("quality.") || k.starts_with("fairness."));
        if !on {
            return Ok(None);
        }
        let param = |key: &str| config.parameters.get(key).map(|p| p.string_value.trim().to_string());
        let known = [
            "quality.output",
            "quality.task",
            "quality.sample_rate",
            "quality.window_secs",
            "quality.min_samples",
            "quality.min_accuracy",
            "quality.max_mae",
            "quality.max_rmse",
            "quality.max_calibration_error",
            "fairness.attribute",
            "fairness.favourable_class",
            "fairness.favourable_threshold",
            "fairness.privileged",
            "fairness.max_groups",
            "fairness.min_disparate_impact",
            "fairness.max_disparate_impact",
            "fairness.max_parity_difference",
        ];
        if let Some(k) = config
            .parameters
            .keys()
            .filter(|k| k.starts_with("quality.") || k.starts_with("fairness."))
            .find(|k| !known.contains(&k.as_str()))
        {
            return Err(format!("unknown parameter '{k}' (known: {})", known.join(", ")));
        }
        let output = match param("quality.output") {
            Some(name) => outputs
                .iter()
                .find(|o| o.0 == name)
                .ok_or_else(|| format!("parameter 'quality.output': the model has no output '{name}'"))?,
            None => outputs
                .first()
                .ok_or_else(|| "quality monitoring needs an output".to_string())?,
        };
        let row: i64 = output.1.iter().product();
        let task = match param("quality.task").as_deref() {
            Some("classification") => Task::Classification,
            Some("regression") => Task::Regression,
            Some(other) => {
                return Err(format!(
                    "parameter 'quality.task' must be 'classification' or 'regression', got '{other}'"
                ));
            }
            None if !(0..2).contains(&row) => Task::Classification,
            None => Task::Regression,
        };
        let fraction = |key: &str, default: f64| -> Result<f64, String> {
            param(key).map_or(Ok(default), |v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| format!("parameter '{key}' must be a number from 0 to 1, got '{v}'"))
            })
        };
        let positive = |key: &str| -> Result<Option<f64>, String> {
            param(key)
                .map(|v| {
                    v.parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite() && *x > 0.0)
                        .ok_or_else(|| format!("parameter '{key}' must be a positive number, got '{v}'"))
                })
                .transpose()
        };
        let integer = |key: &str, default: u64, max: u64| -> Result<u64, String> {
            param(key).map_or(Ok(default), |v| {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| format!("parameter '{key}' must be an integer from 1 to {max}, got '{v}'"))
            })
        };
        let window = Duration::from_secs(integer("quality.window_secs", 3600, MAX_WINDOW_SECS)?);
        let min_accuracy = param("quality.min_accuracy")
            .map(|_| fraction("quality.min_accuracy", 0.0))
            .transpose()?;
        let fairness = match param("fairness.attribute") {
            None => {
                if let Some(k) = config.parameters.keys().find(|k| k.starts_with("fairness.")) {
                    return Err(format!("parameter '{k}' needs 'fairness.attribute'"));
                }
                None
            }
            Some(spec) => Some(fairness_settings(&spec, &param, inputs, row, task)?),
        };
        Ok(Some(QualitySettings {
            output: output.0.to_string(),
            task,
            sample_rate: fraction("quality.sample_rate", 1.0)?,
            window,
            min_samples: integer("quality.min_samples", 100, u64::MAX)?,
            min_accuracy,
            max_mae: positive("quality.max_mae")?,
            max_rmse: positive("quality.max_rmse")?,
            max_calibration_error: param("quality.max_calibration_error")
                .map(|_| fraction("quality.max_calibration_error", 0.0))
                .transpose()?,
            fairness,
        }))
    }
}

fn fairness_settings(
    spec: &str,
    param: &dyn Fn(&str) -> Option<String>,
    inputs: &[Shape<'_>],
    row: i64,
    task: Task,
) -> Result<FairnessSettings, String> {
    let bad = |why: &str| format!("parameter 'fairness.attribute' {why}, got '{spec}'");
    let attribute = if let Some(name) = spec.strip_prefix("parameter:") {
        if name.is_empty() {
            return Err(bad("needs a parameter name"));
        }
        Attribute::Parameter(name.to_string())
    } else if let Some(rest) = spec.strip_prefix("input:") {
        let (tensor, index) = rest
            .strip_suffix(']')
            .and_then(|r| r.split_once('['))
            .and_then(|(t, i)| Some((t, i.parse::<usize>().ok()?)))
            .ok_or_else(|| bad("must be 'input:<name>[<index>]' or 'parameter:<name>'"))?;
        let input = inputs
            .iter()
            .find(|i| i.0 == tensor)
            .ok_or_else(|| bad("names an input the model does not have"))?;
        let elements: i64 = input.1.iter().product();
        if elements >= 0 && index as i64 >= elements {
            return Err(bad(&format!("indexes past the input's {elements} elements per row")));
        }
        Attribute::Input {
            tensor: tensor.to_string(),
            index,
        }
    } else {
        return Err(bad("must be 'input:<name>[<index>]' or 'parameter:<name>'"));
    };
    let favourable_class = param("fairness.favourable_class")
        .map(|v| {
            v.parse::<usize>()
                .ok()
                .filter(|c| row < 0 || (*c as i64) < row)
                .ok_or_else(|| {
                    format!("parameter 'fairness.favourable_class' must be a class index below {row}, got '{v}'")
                })
        })
        .transpose()?;
    let favourable_threshold = param("fairness.favourable_threshold")
        .map(|v| {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("parameter 'fairness.favourable_threshold' must be a number, got '{v}'"))
        })
        .transpose()?;
    match (task, favourable_class, favourable_threshold) {
        (Task::Classification, None, _) => {
            return Err("fairness on a classifier needs 'fairness.favourable_class'".into());
        }
        (Task::Regression, _, None) => {
            return Err("fairness on a regressor needs 'fairness.favourable_threshold'".into());
        }
        _ => {}
    }
    let ratio = |key: &str, default: f64| -> Result<f64, String> {
        param(key).map_or(Ok(default), |v| {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("parameter '{key}' must be a non-negative number, got '{v}'"))
        })
    };
    let max_groups = param("fairness.max_groups").map_or(Ok(16), |v| {
        v.parse::<usize>()
            .ok()
            .filter(|n| (2..=MAX_GROUPS_LIMIT).contains(n))
            .ok_or_else(|| {
                format!("parameter 'fairness.max_groups' must be an integer from 2 to {MAX_GROUPS_LIMIT}, got '{v}'")
            })
    })?;
    let min_disparate_impact = ratio("fairness.min_disparate_impact", 0.8)?;
    let max_disparate_impact = ratio("fairness.max_disparate_impact", 1.25)?;
    if min_disparate_impact > max_disparate_impact {
        return Err("'fairness.min_disparate_impact' is above 'fairness.max_disparate_impact'".into());
    }
    Ok(FairnessSettings {
        attribute,
        favourable_class,
        favourable_threshold,
        privileged: param("fairness.privileged").filter(|p| !p.is_empty()),
        max_groups,
        min_disparate_impact,
        max_disparate_impact,
        max_parity_difference: ratio("fairness.max_parity_difference", 0.1)?,
    })
}
