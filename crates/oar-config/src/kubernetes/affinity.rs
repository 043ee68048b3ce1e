//! `[runners.kubernetes.affinity]`: the Kubernetes affinity shape with snake_case keys.
//!
//! These types are both the wire form and the domain form; the executor maps them 1:1 onto
//! the pod's `affinity`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `affinity`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Affinity {
    /// `node_affinity`.
    pub node_affinity: Option<NodeAffinity>,
    /// `pod_affinity`.
    pub pod_affinity: Option<PodAffinity>,
    /// `pod_anti_affinity`.
    pub pod_anti_affinity: Option<PodAffinity>,
}

/// `affinity.node_affinity`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NodeAffinity {
    /// `required_during_scheduling_ignored_during_execution`.
    pub required_during_scheduling_ignored_during_execution: Option<NodeSelector>,
    /// `preferred_during_scheduling_ignored_during_execution`.
    pub preferred_during_scheduling_ignored_during_execution: Vec<PreferredSchedulingTerm>,
}

/// A node selector: the terms are ORed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NodeSelector {
    /// `node_selector_terms`.
    pub node_selector_terms: Vec<NodeSelectorTerm>,
}

/// One node selector term: its requirements are ANDed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NodeSelectorTerm {
    /// `match_expressions` (node labels).
    pub match_expressions: Vec<SelectorRequirement>,
    /// `match_fields` (node fields).
    pub match_fields: Vec<SelectorRequirement>,
}

/// `{key, operator, values}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SelectorRequirement {
    /// `key`.
    pub key: String,
    /// `operator`: `In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt`.
    pub operator: String,
    /// `values`.
    pub values: Vec<String>,
}

/// `{weight, preference}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PreferredSchedulingTerm {
    /// `weight` (1-100).
    pub weight: i32,
    /// `preference`.
    pub preference: NodeSelectorTerm,
}

/// `affinity.pod_affinity` and `affinity.pod_anti_affinity`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PodAffinity {
    /// `required_during_scheduling_ignored_during_execution`.
    pub required_during_scheduling_ignored_during_execution: Vec<PodAffinityTerm>,
    /// `preferred_during_scheduling_ignored_during_execution`.
    pub preferred_during_scheduling_ignored_during_execution: Vec<WeightedPodAffinityTerm>,
}

/// `{label_selector, namespaces, topology_key, namespace_selector}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PodAffinityTerm {
    /// `label_selector`.
    pub label_selector: Option<LabelSelector>,
    /// `namespaces`.
    pub namespaces: Vec<String>,
    /// `topology_key`.
    pub topology_key: String,
    /// `namespace_selector`.
    pub namespace_selector: Option<LabelSelector>,
}

/// `{weight, pod_affinity_term}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct WeightedPodAffinityTerm {
    /// `weight` (1-100).
    pub weight: i32,
    /// `pod_affinity_term`.
    pub pod_affinity_term: PodAffinityTerm,
}

/// `{match_labels, match_expressions}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LabelSelector {
    /// `match_labels`.
    pub match_labels: BTreeMap<String, String>,
    /// `match_expressions`.
    pub match_expressions: Vec<SelectorRequirement>,
}
