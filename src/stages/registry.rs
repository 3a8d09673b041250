//! The one list of stage kinds. A new kind is one new file in `stages/` and one line here.

use super::StageKind;

static KINDS: &[&dyn StageKind] = &[
    &super::dataset::Dataset,
    &super::gray_scott::GrayScott,
    &super::train_score::TrainScore,
    &super::train_dynamics::TrainDynamics,
    &super::training_free::TrainingFree,
    &super::evaluate_flow::EvaluateFlow,
    &super::evaluate_chaos::EvaluateChaos,
    &super::simulate::Simulate,
    &super::evaluate_alignment::EvaluateAlignment,
    &super::icons::Icons,
    &super::track::TrackKind,
    &super::evaluate_behaviour::EvaluateBehaviour,
];

/// Every registered kind, in documentation order.
pub fn all_kinds() -> &'static [&'static dyn StageKind] {
    KINDS
}

/// The kind called `name`.
pub fn find_kind(name: &str) -> Option<&'static dyn StageKind> {
    KINDS.iter().copied().find(|k| k.name() == name)
}
