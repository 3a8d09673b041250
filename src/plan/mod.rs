//! The plan: the DAG of stage instances that a run executes.
//!
//! A stage appears once per distinct set of resolved parameters and inputs across the sweep points: a stage
//! untouched by the sweep is one instance shared by every point, a swept stage and everything downstream
//! of it are multiplied. Cycles and missing references are found here, before anything runs, and reported
//! with the stage names in order (`a -> b -> a`).

mod sweep;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::config::{
    self, Config, Diagnostic, Diagnostics, Override, Params, PipelineFile, Source, StageConfig,
    Value,
};
use crate::stages::StageKind;

pub use sweep::{axis_name, expand, SweepPoint};

/// One stage instance: a node of the DAG.
#[derive(Clone)]
pub struct Instance {
    /// Unique label: the stage name, plus the sweep coordinates that distinguish it (`dynamics[seed=3]`).
    pub label: String,
    /// The stage's name in the file.
    pub stage: String,
    /// Its kind.
    pub kind: &'static dyn StageKind,
    /// Resolved parameters.
    pub params: Params,
    /// Input parameter -> upstream instance.
    pub inputs: BTreeMap<String, NodeIndex>,
    /// The sweep coordinates of the points that use this instance and distinguish it from its siblings.
    pub coords: BTreeMap<String, Value>,
    /// Where the stage is declared.
    pub source: Source,
}

/// A validated, expanded pipeline.
pub struct Plan {
    /// The pipeline file.
    pub path: PathBuf,
    /// Its directory.
    pub dir: PathBuf,
    /// Pipeline name.
    pub name: String,
    /// Compute device.
    pub device: String,
    /// Stage instances; an edge `a -> b` means b reads a's outputs (edge weight: b's input parameter).
    pub graph: DiGraph<Instance, String>,
    /// Instances in a valid execution order (topological, ties in file order).
    pub order: Vec<NodeIndex>,
    /// The sweep points, each mapping stage name -> instance.
    pub points: Vec<(SweepPoint, BTreeMap<String, NodeIndex>)>,
    /// Stage names in file order.
    pub stage_names: Vec<String>,
    /// `[pipeline] executor` (`local` or `slurm`).
    pub executor: String,
    /// `[slurm]` job settings.
    pub slurm: config::SlurmConfig,
}

/// What to build a plan from.
#[derive(Debug, Clone, Default)]
pub struct PlanRequest {
    /// The pipeline file.
    pub path: PathBuf,
    /// `--profile`.
    pub profile: Option<String>,
    /// `--set` overrides in order.
    pub sets: Vec<Override>,
}

impl Plan {
    /// Loads, validates and expands a pipeline.
    pub fn build(req: &PlanRequest) -> Result<Plan, Diagnostics> {
        let file = PipelineFile::load(&req.path)?;
        let mut base = Vec::new();
        if let Some(p) = &req.profile {
            base.extend(config::profile_overrides(&file, p)?);
        }
        base.extend(req.sets.iter().cloned());
        // `sweep.*` overrides (e.g. a paper profile with `sweep.seeds = 100`) reshape the sweep itself.
        let (sweep_overrides, base): (Vec<Override>, Vec<Override>) =
            base.into_iter().partition(|o| o.path.starts_with("sweep."));
        let mut sweep_table = file.sweep.clone();
        sweep::apply_overrides(&mut sweep_table, &sweep_overrides)?;
        let points = expand(&sweep_table)?;

        // Validate every point; report each distinct problem once.
        let mut configs = Vec::with_capacity(points.len());
        let mut diags = Diagnostics::default();
        let mut seen = BTreeSet::new();
        for p in &points {
            let mut ovs = base.clone();
            ovs.extend(p.overrides.iter().cloned());
            match config::resolve(&file, &ovs) {
                Ok(c) => configs.push(c),
                Err(d) => {
                    for x in d.0 {
                        if seen.insert(x.to_string()) {
                            diags.push(x);
                        }
                    }
                }
            }
        }
        if !diags.0.is_empty() {
            return Err(diags);
        }
        let first = &configs[0];
        let stage_order = stage_order(first)?;
        Ok(Self::expand(first, &stage_order, points, &configs))
    }

    fn expand(
        first: &Config,
        stage_order: &[usize],
        points: Vec<SweepPoint>,
        configs: &[Config],
    ) -> Plan {
        let mut graph: DiGraph<Instance, String> = DiGraph::new();
        let mut interned: HashMap<String, NodeIndex> = HashMap::new();
        let mut point_maps: Vec<BTreeMap<String, NodeIndex>> = vec![BTreeMap::new(); configs.len()];
        // Which points use each node (to derive labels).
        let mut users: HashMap<NodeIndex, Vec<usize>> = HashMap::new();
        // Every instance of each stage so far, in creation order (what a list input gathers).
        let mut instances: HashMap<String, Vec<NodeIndex>> = HashMap::new();
        // Stage-major: all instances of a stage exist before any stage downstream of it is expanded, so a
        // list input can gather every instance of a swept stage.
        for &si in stage_order {
            for (pi, cfg) in configs.iter().enumerate() {
                let sc = &cfg.stages[si];
                let map = &point_maps[pi];
                let mut inputs: BTreeMap<String, NodeIndex> = BTreeMap::new();
                let mut lists: BTreeMap<&str, Vec<NodeIndex>> = BTreeMap::new();
                let mut list_keys: Vec<(&str, usize, &String)> = sc
                    .inputs
                    .iter()
                    .filter_map(|(k, up)| config::split_list_input_key(k).map(|(n, i)| (n, i, up)))
                    .collect();
                list_keys.sort();
                for (name, _, up) in list_keys {
                    let all = lists.entry(name).or_default();
                    for n in &instances[up.as_str()] {
                        if !all.contains(n) {
                            all.push(*n);
                        }
                    }
                }
                for (param, up) in &sc.inputs {
                    if config::split_list_input_key(param).is_none() {
                        inputs.insert(param.clone(), map[up]);
                    }
                }
                for (name, nodes) in lists {
                    for (i, n) in nodes.into_iter().enumerate() {
                        inputs.insert(config::list_input_key(name, i), n);
                    }
                }
                let identity = format!(
                    "{}\u{0}{}\u{0}{:?}",
                    sc.name,
                    serde_json::to_string(&sc.params).expect("params serialise"),
                    inputs
                        .iter()
                        .map(|(k, v)| (k, v.index()))
                        .collect::<Vec<_>>()
                );
                let node = *interned.entry(identity).or_insert_with(|| {
                    let n = graph.add_node(Instance {
                        label: sc.name.clone(),
                        stage: sc.name.clone(),
                        kind: sc.kind,
                        params: sc.params.clone(),
                        inputs: inputs.clone(),
                        coords: BTreeMap::new(),
                        source: sc.source.clone(),
                    });
                    for (param, up) in &inputs {
                        graph.add_edge(*up, n, param.clone());
                    }
                    instances.entry(sc.name.clone()).or_default().push(n);
                    n
                });
                users.entry(node).or_default().push(pi);
                point_maps[pi].insert(sc.name.clone(), node);
            }
        }
        label_instances(&mut graph, &users, &points);
        let rank: HashMap<&str, usize> = stage_order
            .iter()
            .enumerate()
            .map(|(r, &si)| (first.stages[si].name.as_str(), r))
            .collect();
        let mut order: Vec<NodeIndex> = graph.node_indices().collect();
        // Node indices were created in (stage order, point) order, which is topological; the stable sort by
        // the stage's rank keeps that.
        order.sort_by_key(|n| (rank[graph[*n].stage.as_str()], n.index()));
        Plan {
            path: first.path.clone(),
            dir: first.dir.clone(),
            name: first.name.clone(),
            device: first.device.clone(),
            graph,
            order,
            points: points.into_iter().zip(point_maps).collect(),
            stage_names: first.stages.iter().map(|s| s.name.clone()).collect(),
            executor: first.executor.clone(),
            slurm: first.slurm.clone(),
        }
    }

    /// The instances needed for `targets` (stage names or instance labels): the targets and their ancestors,
    /// in execution order. Empty targets: everything.
    pub fn select(&self, targets: &[String]) -> Result<Vec<NodeIndex>, String> {
        if targets.is_empty() {
            return Ok(self.order.clone());
        }
        let mut wanted = BTreeSet::new();
        for t in targets {
            let hits: Vec<NodeIndex> = self
                .graph
                .node_indices()
                .filter(|n| self.graph[*n].stage == *t || self.graph[*n].label == *t)
                .collect();
            if hits.is_empty() {
                let names: Vec<&str> = self.stage_names.iter().map(String::as_str).collect();
                let mut msg = format!("{}: no stage `{t}`", self.path.display());
                if let Some(near) = config::suggest(t, names.iter().copied()) {
                    msg.push_str(&format!(" (did you mean `{near}`?)"));
                } else {
                    msg.push_str(&format!("; stages: {}", names.join(", ")));
                }
                return Err(msg);
            }
            let mut stack = hits;
            while let Some(n) = stack.pop() {
                if wanted.insert(n) {
                    stack.extend(self.graph.neighbors_directed(n, Direction::Incoming));
                }
            }
        }
        Ok(self
            .order
            .iter()
            .copied()
            .filter(|n| wanted.contains(n))
            .collect())
    }

    /// The direct dependents of `n`.
    pub fn dependents(&self, n: NodeIndex) -> impl Iterator<Item = NodeIndex> + '_ {
        self.graph
            .edges_directed(n, Direction::Outgoing)
            .map(|e| e.target())
    }
}

/// Gives instances of a stage that occurs more than once a label with the sweep coordinates that tell them apart.
fn label_instances(
    graph: &mut DiGraph<Instance, String>,
    users: &HashMap<NodeIndex, Vec<usize>>,
    points: &[SweepPoint],
) {
    let mut by_stage: BTreeMap<String, Vec<NodeIndex>> = BTreeMap::new();
    for n in graph.node_indices() {
        by_stage.entry(graph[n].stage.clone()).or_default().push(n);
    }
    for (stage, nodes) in by_stage {
        if nodes.len() < 2 {
            continue;
        }
        // Axes whose value is constant over the points of each instance but differs between instances.
        let axes: Vec<String> = points
            .first()
            .map(|p| p.coords.keys().cloned().collect())
            .unwrap_or_default();
        let distinguishing: Vec<&String> = axes
            .iter()
            .filter(|axis| {
                let per_node: Vec<Option<&Value>> = nodes
                    .iter()
                    .map(|n| {
                        let vals: BTreeSet<String> = users[n]
                            .iter()
                            .map(|&p| points[p].coords[*axis].to_string())
                            .collect();
                        if vals.len() == 1 {
                            points[users[n][0]].coords.get(*axis)
                        } else {
                            None
                        }
                    })
                    .collect();
                per_node.iter().all(Option::is_some)
                    && per_node
                        .iter()
                        .map(|v| v.map(|x| x.to_string()))
                        .collect::<BTreeSet<_>>()
                        .len()
                        > 1
            })
            .collect();
        for (i, n) in nodes.iter().enumerate() {
            let coords: BTreeMap<String, Value> = distinguishing
                .iter()
                .map(|a| ((*a).clone(), points[users[n][0]].coords[*a].clone()))
                .collect();
            let label = if coords.is_empty() {
                format!("{stage}[{i}]")
            } else {
                format!(
                    "{stage}[{}]",
                    coords
                        .iter()
                        .map(|(k, v)| format!("{k}={}", plain(v)))
                        .collect::<Vec<_>>()
                        .join(",")
                )
            };
            graph[*n].label = label;
            graph[*n].coords = coords;
        }
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Stage indices in a topological order (ties in file order), or a diagnostic naming a cycle.
fn stage_order(cfg: &Config) -> Result<Vec<usize>, Diagnostics> {
    let index: HashMap<&str, usize> = cfg
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut g: DiGraph<usize, ()> = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..cfg.stages.len()).map(|i| g.add_node(i)).collect();
    for (i, s) in cfg.stages.iter().enumerate() {
        for up in s.inputs.values() {
            g.add_edge(nodes[index[up.as_str()]], nodes[i], ());
        }
    }
    let mut diags = Diagnostics::default();
    for scc in petgraph::algo::tarjan_scc(&g) {
        if scc.len() > 1 {
            let members: BTreeSet<usize> = scc.iter().map(|n| g[*n]).collect();
            diags.push(cycle_diagnostic(cfg, &members));
        }
    }
    if !diags.0.is_empty() {
        return Err(diags);
    }
    // Kahn's algorithm, always taking the ready stage that comes first in the file.
    let mut indeg: Vec<usize> = cfg.stages.iter().map(|s| s.inputs.len()).collect();
    let mut ready: BTreeSet<usize> = (0..cfg.stages.len()).filter(|i| indeg[*i] == 0).collect();
    let mut order = Vec::new();
    while let Some(&i) = ready.iter().next() {
        ready.remove(&i);
        order.push(i);
        for (j, s) in cfg.stages.iter().enumerate() {
            let uses = s.inputs.values().filter(|u| index[u.as_str()] == i).count();
            if uses > 0 {
                indeg[j] -= uses;
                if indeg[j] == 0 {
                    ready.insert(j);
                }
            }
        }
    }
    Ok(order)
}

fn cycle_diagnostic(cfg: &Config, members: &BTreeSet<usize>) -> Diagnostic {
    // Walk the cycle from the member that comes first in the file, following inputs backwards:
    // a stage reading b means b -> a, so print in data-flow order.
    let start = *members.iter().next().expect("non-empty cycle");
    let consumer_of = |i: usize| -> Option<(usize, &str)> {
        cfg.stages
            .iter()
            .enumerate()
            .filter(|(j, _)| members.contains(j))
            .find_map(|(j, s)| {
                s.inputs
                    .iter()
                    .find(|(_, up)| **up == cfg.stages[i].name)
                    .map(|(param, _)| (j, param.as_str()))
            })
    };
    let mut path = vec![cfg.stages[start].name.clone()];
    let mut cur = start;
    let mut first_edge: Option<(usize, String)> = None;
    for _ in 0..=members.len() {
        let Some((next, param)) = consumer_of(cur) else {
            break;
        };
        if first_edge.is_none() {
            first_edge = Some((next, param.to_string()));
        }
        path.push(cfg.stages[next].name.clone());
        cur = next;
        if cur == start {
            break;
        }
    }
    let (stage, param): (&StageConfig, String) = match &first_edge {
        Some((j, p)) => (&cfg.stages[*j], p.clone()),
        None => (&cfg.stages[start], String::new()),
    };
    let src = stage
        .sources
        .get(&param)
        .cloned()
        .unwrap_or_else(|| stage.source.clone());
    Diagnostic::new(
        src,
        Some(format!("stages.{}.{param}", stage.name)),
        format!("cycle between stages: {}", path.join(" -> ")),
    )
    .with_help("a stage cannot depend, directly or indirectly, on its own outputs")
}
