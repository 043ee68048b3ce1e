//! Fuzzes the job payload: GitLab's job JSON (and optionally `[runners.kubernetes]`) through
//! the job context, every stage script and the pod builder; the pod must be one Kubernetes
//! accepts (see `oar_kube::fuzz::fuzz_payload`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| oar_kube::fuzz::fuzz_payload(data));
