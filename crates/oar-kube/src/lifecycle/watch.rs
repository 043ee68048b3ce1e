//! One shared watch per namespace: `kube_runtime::watcher` (list + watch, default backoff,
//! resumed from the last resourceVersion) feeding a reflector store, with tombstones for pods
//! that went away and a `tokio::sync::watch` channel that wakes every waiting job.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_stream};
use kube::{Resource, ResourceExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The key of a cluster-wide watch (`kubectl get pods --all-namespaces`).
pub(crate) const ALL_NAMESPACES: &str = "";

/// How logs and errors name a watch's namespace.
pub(crate) fn scope_name(namespace: &str) -> String {
    if namespace == ALL_NAMESPACES {
        "all namespaces".to_owned()
    } else {
        format!("namespace {namespace:?}")
    }
}

/// Pods remembered after they went away, at most, per namespace (oldest forgotten first).
const TOMBSTONES: usize = 1024;
/// How long a pod is remembered after it went away. Waiting jobs look at it as soon as the
/// watch reports it; a wait that starts later, or finds nothing, confirms with a `get`.
const TOMBSTONE_TTL: Duration = Duration::from_secs(600);

/// Drops what the manager never reads from a watched pod before the store keeps it: managed
/// fields, and all of the spec but each container's name, image and resource limits and the
/// pod's own limits (for the messages on image pull errors and OOM kills). The build
/// container's environment (every job variable) and the step wrapper make up most of a job
/// pod's bytes; with hundreds of pods running, the manager holds only their metadata and status.
pub(crate) fn slim(pod: &mut Pod) {
    pod.managed_fields_mut().clear();
    let Some(spec) = pod.spec.take() else { return };
    let limits_only = |r: ResourceRequirements| ResourceRequirements {
        limits: r.limits,
        ..ResourceRequirements::default()
    };
    let keep = |c: Container| Container {
        name: c.name,
        image: c.image,
        resources: c.resources.map(limits_only),
        ..Container::default()
    };
    pod.spec = Some(PodSpec {
        containers: spec.containers.into_iter().map(keep).collect(),
        init_containers: spec
            .init_containers
            .map(|cs| cs.into_iter().map(keep).collect()),
        resources: spec.resources.map(limits_only),
        node_name: spec.node_name,
        ..PodSpec::default()
    });
}

/// The watch of one namespace (or of all of them: [`ALL_NAMESPACES`]), shared by every job
/// there.
pub(crate) struct NsWatch {
    /// The namespace, or [`ALL_NAMESPACES`].
    pub(crate) namespace: String,
    pub(crate) store: Store<Pod>,
    /// Bumped after every event the store has taken in (and every watch error).
    pub(crate) changes: watch::Sender<u64>,
    state: Mutex<NsState>,
}

#[derive(Default)]
struct NsState {
    /// Last states of pods that went away, by UID.
    tombstones: HashMap<String, Arc<Pod>>,
    /// UIDs with the time they were buried, oldest first.
    order: VecDeque<(Instant, String)>,
    /// How many (re)lists have begun (`Event::Init`).
    init_seq: u64,
    /// The `init_seq` of the last completed list (`Event::InitDone`); 0 before the first.
    listed_seq: u64,
    /// The store before the running relist began.
    before_relist: Option<Vec<Arc<Pod>>>,
    /// The watch's last error since its last good event.
    degraded: Option<String>,
    /// The last error ever seen (for start-up diagnostics).
    last_error: Option<String>,
    /// The first list was refused (RBAC): waiting will not help.
    forbidden: bool,
}

/// Where one pod stands in a namespace's view.
pub(crate) enum View {
    /// In the store (its current state as last seen).
    Present(Arc<Pod>),
    /// Gone; its last state when known.
    Gone(Option<Arc<Pod>>),
    /// Not seen yet: the watch has not caught up with its creation.
    Unseen,
}

impl NsWatch {
    fn state(&self) -> MutexGuard<'_, NsState> {
        // A panic while holding the lock cannot leave the state inconsistent in a way that
        // matters (counters and a cache): keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts watching `namespace` (or all of them: [`ALL_NAMESPACES`]) for pods matching
    /// `selector`, until `stop` fires.
    pub(crate) fn start(
        client: kube::Client,
        namespace: &str,
        selector: &str,
        stop: CancellationToken,
    ) -> Arc<NsWatch> {
        let api: Api<Pod> = if namespace == ALL_NAMESPACES {
            Api::all(client)
        } else {
            Api::namespaced(client, namespace)
        };
        let (store, writer) = reflector::store();
        let (changes, _) = watch::channel(0);
        let ns = Arc::new(NsWatch {
            namespace: namespace.to_owned(),
            store,
            changes,
            state: Mutex::new(NsState::default()),
        });
        // List + watch (not streaming lists: Kubernetes before 1.27 rejects them).
        let config = watcher::Config::default().labels(selector);
        let stream = watch_stream(api, config)
            .modify(slim)
            .default_backoff()
            .reflect(writer);
        let task_ns = ns.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                let next = tokio::select! {
                    () = stop.cancelled() => break,
                    next = stream.next() => next,
                };
                match next {
                    Some(event) => task_ns.take(event),
                    None => break,
                }
            }
            tracing::debug!(scope = %scope_name(&task_ns.namespace), "pod watch stopped");
        });
        ns
    }

    /// Takes in one watcher event (the reflector has already applied it to the store).
    fn take(&self, event: Result<Event<Pod>, watcher::Error>) {
        {
            let mut st = self.state();
            match &event {
                Ok(Event::Init) => {
                    st.init_seq += 1;
                    st.before_relist = Some(self.store.state());
                }
                Ok(Event::InitApply(_)) => return,
                Ok(Event::InitDone) => {
                    st.listed_seq = st.init_seq;
                    st.degraded = None;
                    st.forbidden = false;
                    if let Some(before) = st.before_relist.take() {
                        let now: HashSet<String> =
                            self.store.state().iter().filter_map(|p| p.uid()).collect();
                        for pod in before {
                            if let Some(uid) = pod.uid().filter(|u| !now.contains(u)) {
                                st.bury(uid, pod);
                            }
                        }
                    }
                }
                Ok(Event::Apply(_)) => st.degraded = None,
                Ok(Event::Delete(pod)) => {
                    st.degraded = None;
                    if let Some(uid) = pod.uid() {
                        st.bury(uid, Arc::new(pod.clone()));
                    }
                }
                Err(e) => {
                    let text = e.to_string();
                    if st.degraded.is_none() {
                        tracing::warn!(scope = %scope_name(&self.namespace), error = %text, "pod watch failed; resuming with backoff");
                    } else {
                        tracing::debug!(scope = %scope_name(&self.namespace), error = %text, "pod watch failed again");
                    }
                    if let watcher::Error::InitialListFailed(kube::Error::Api(s)) = e
                        && s.is_forbidden()
                    {
                        st.forbidden = true;
                    }
                    st.degraded = Some(text.clone());
                    st.last_error = Some(text);
                }
            }
        }
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Whether the first list is done.
    pub(crate) fn listed(&self) -> bool {
        self.state().listed_seq > 0
    }

    /// The first list was refused, and the last error.
    pub(crate) fn start_problem(&self) -> (bool, Option<String>) {
        let st = self.state();
        (st.forbidden, st.last_error.clone())
    }

    /// Whether the watch failed since its last good event (its view may be stale).
    pub(crate) fn degraded(&self) -> bool {
        self.state().degraded.is_some()
    }

    /// The number of lists begun so far: a pod created after this, absent after a list that
    /// began later, is gone.
    pub(crate) fn init_seq(&self) -> u64 {
        self.state().init_seq
    }

    /// Where the pod `namespace/name` with `uid` stands, for a pod created when
    /// [`Self::init_seq`] was `created_at_seq`.
    pub(crate) fn view(&self, namespace: &str, name: &str, uid: &str, created_at_seq: u64) -> View {
        let key = ObjectRef::<Pod>::new(name).within(namespace);
        let st = self.state();
        if let Some(pod) = self.store.get(&key)
            && pod.meta().uid.as_deref() == Some(uid)
        {
            return View::Present(pod);
        }
        if let Some(last) = st.tombstones.get(uid) {
            return View::Gone(Some(last.clone()));
        }
        if st.listed_seq > created_at_seq {
            // A list that began after the pod was created did not have it.
            return View::Gone(None);
        }
        match self.store.get(&key) {
            // Another pod of the same name: ours is gone.
            Some(_) => View::Gone(None),
            None => View::Unseen,
        }
    }

    /// Forgets a pod's tombstone (after cleanup).
    pub(crate) fn forget(&self, uid: &str) {
        let mut st = self.state();
        if st.tombstones.remove(uid).is_some() {
            st.order.retain(|(_, u)| u != uid);
        }
    }
}

impl NsState {
    fn bury(&mut self, uid: String, pod: Arc<Pod>) {
        let now = Instant::now();
        if self.tombstones.insert(uid.clone(), pod).is_none() {
            self.order.push_back((now, uid));
        }
        while let Some((at, _)) = self.order.front() {
            if self.order.len() <= TOMBSTONES && now.duration_since(*at) < TOMBSTONE_TTL {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.tombstones.remove(&old);
            }
        }
    }
}
