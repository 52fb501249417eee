//! Which prompt versions a turn (or a digest) uses: the course's running experiment's arm for
//! the learner (system prompt and offline reply only), else the version its `production` label
//! points to, else the `*` (every course) label's, else the shipped default. What the labels
//! and experiments say is cached, compiled, and read again from the database when its
//! generation counter moved, which is checked before every turn: a promotion or rollback made
//! on any node is used by the next answer on every node.
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::prompt::experiment::{Arm, assign};
use crate::prompt::{LiveTemplates, Prompts, Template, TemplateName};
use crate::store::{LivePromptRows, Store, StoreError};

/// The prompts of one turn and the experiment that chose them, if one did.
pub struct Chosen {
    pub prompts: Prompts,
    pub experiment: Option<String>,
}

struct RunningExperiment {
    id: String,
    arms: Vec<Arm>,
    templates: HashMap<String, Arc<Template>>,
}

#[derive(Default)]
struct Cache {
    /// `None` until the first read.
    generation: Option<i64>,
    production: HashMap<(String, TemplateName), Arc<Template>>,
    experiments: HashMap<(String, TemplateName), RunningExperiment>,
}

/// The live prompt versions of every course, as this node last read them.
pub struct LivePrompts {
    store: Arc<Store>,
    shipped: Prompts,
    cache: RwLock<Cache>,
    /// One reload at a time; the others wait for it and use its result.
    reloading: tokio::sync::Mutex<()>,
}

impl LivePrompts {
    pub fn new(store: Arc<Store>, shipped: Prompts) -> Self {
        Self {
            store,
            shipped,
            cache: RwLock::new(Cache::default()),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// The prompts for a turn of `learner` on `course`. A database that cannot be read leaves
    /// the versions last read in place (logged).
    pub async fn choose(&self, course: Option<&str>, learner: &str) -> Chosen {
        if let Err(error) = self.refresh_if_changed().await {
            tracing::warn!(
                ?error,
                "cannot read the prompt versions; using the ones last read"
            );
        }
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let mut prompts = self.shipped.clone();
        let mut experiment = None;
        for template in TemplateName::ALL {
            let course_key = |course: &str| (course.to_string(), template);
            if let Some(course) = course
                && template.allows_experiments()
                && let Some(running) = cache.experiments.get(&course_key(course))
                && let Some(arm) = assign(&running.id, learner, &running.arms)
                && let Some(compiled) = running.templates.get(&arm.version)
            {
                prompts = prompts.with(compiled.clone());
                experiment.get_or_insert_with(|| running.id.clone());
                continue;
            }
            let labelled = course
                .and_then(|course| cache.production.get(&course_key(course)))
                .or_else(|| cache.production.get(&course_key("*")));
            if let Some(compiled) = labelled {
                prompts = prompts.with(compiled.clone());
            }
        }
        Chosen {
            prompts,
            experiment,
        }
    }

    /// Reads the versions again if the generation moved since they were read.
    async fn refresh_if_changed(&self) -> Result<(), StoreError> {
        let generation = self.store.prompt_generation().await?;
        if self.generation() == Some(generation) {
            return Ok(());
        }
        let _one_at_a_time = self.reloading.lock().await;
        if self.generation() == Some(generation) {
            return Ok(());
        }
        self.reload().await
    }

    /// Reads the versions again now (after a change made through this node).
    pub async fn reload(&self) -> Result<(), StoreError> {
        let rows = self.store.live_prompts().await?;
        let fresh = self.compile(rows);
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    fn generation(&self) -> Option<i64> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .generation
    }

    fn compile(&self, rows: LivePromptRows) -> Cache {
        let mut cache = Cache {
            generation: Some(rows.generation),
            ..Default::default()
        };
        for (course, template, version, text) in rows.production {
            if let Some(compiled) = compiled(template, &version, text.as_deref()) {
                cache.production.insert((course, template), compiled);
            }
        }
        for (experiment, texts) in rows.experiments {
            let templates: HashMap<String, Arc<Template>> = texts
                .into_iter()
                .filter_map(|(version, text)| {
                    compiled(experiment.template, &version, text.as_deref())
                        .map(|compiled| (version, compiled))
                })
                .collect();
            if templates.len() != experiment.arms.len() {
                tracing::warn!(
                    experiment = %experiment.id,
                    "an arm of the experiment has no usable version; the experiment is not applied"
                );
                continue;
            }
            cache.experiments.insert(
                (experiment.course.clone(), experiment.template),
                RunningExperiment {
                    id: experiment.id,
                    arms: experiment.arms,
                    templates,
                },
            );
        }
        cache
    }
}

#[async_trait::async_trait]
impl LiveTemplates for LivePrompts {
    async fn live(&self, course: Option<&str>, learner: &str) -> Prompts {
        self.choose(course, learner).await.prompts
    }
}

/// A version compiled: a stored text, or the shipped default for its own id. A version that
/// cannot be used (a default id of another release, a text that no longer compiles) is logged
/// and left out, so the turn falls back to the next choice.
fn compiled(template: TemplateName, version: &str, text: Option<&str>) -> Option<Arc<Template>> {
    let result = match text {
        Some(text) => Template::compile(template, version, text),
        None if version == template.default_version_id() => Template::shipped(template),
        None => {
            tracing::warn!(version, "a label or arm names an unknown prompt version");
            return None;
        }
    };
    match result {
        Ok(compiled) => Some(Arc::new(compiled)),
        Err(error) => {
            tracing::warn!(%error, version, "a stored prompt version does not compile");
            None
        }
    }
}
