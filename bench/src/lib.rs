//! The decision benchmark of issue #4. One policy set per size is generated from a seed and
//! expressed three times — in Gate, in Cedar and in Rego — then decided by the Portcullis VM,
//! the reference evaluator, Cedar (`cedar-policy`) and regorus (its interpreter and its RVM),
//! after a check that all of them decide a sample of requests alike.
//!
//! Pipeline: [`model`] generates the policy set and [`sample`] the requests; [`gate`],
//! [`cedar`] and [`rego`] render the one model in each language; [`portcullis`], [`cedar`]
//! and [`rego`] build the engines; [`run`] checks agreement and times each engine with
//! [`measure`]; [`report`] prints markdown. [`memory`] runs the heap measurement in a child
//! process, whose binary carries a counting allocator that the timed binary must not.

pub mod cedar;
pub mod gate;
pub mod measure;
pub mod memory;
pub mod model;
pub mod portcullis;
pub mod rego;
pub mod report;
pub mod rng;
pub mod run;
pub mod sample;

/// The engines the benchmark compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Vm,
    Reference,
    Cedar,
    Regorus,
    RegorusRvm,
}

impl Engine {
    pub const ALL: [Engine; 5] = [
        Engine::Vm,
        Engine::Reference,
        Engine::Cedar,
        Engine::Regorus,
        Engine::RegorusRvm,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Engine::Vm => "Portcullis VM",
            Engine::Reference => "reference evaluator",
            Engine::Cedar => "Cedar",
            Engine::Regorus => "regorus",
            Engine::RegorusRvm => "regorus RVM",
        }
    }

    /// The engine's name in the memory child's output.
    pub fn key(self) -> &'static str {
        match self {
            Engine::Vm => "vm",
            Engine::Reference => "reference",
            Engine::Cedar => "cedar",
            Engine::Regorus => "regorus",
            Engine::RegorusRvm => "regorus-rvm",
        }
    }

    pub fn from_key(key: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|engine| engine.key() == key)
    }
}
