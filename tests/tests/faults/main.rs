//! Faults under load (issue 15, RELIABILITY.md): the real stack, each service a process of
//! its own, with MongoDB, Redis and KMS each behind a proxy that can refuse, stall or slow
//! them, while the workload's simulated users do the real mix. Each test injects one fault
//! while the load runs, checks what a client sees during it, lets the stack recover without
//! restarting anything it did not break, and ends with the workload's consistency audit:
//! every acknowledged write present, nothing duplicated or half-done.
//!
//! The tests of this binary run one at a time (each starts a whole stack of processes, and
//! the machine has two cores); each takes well under a minute.

mod audit;
mod kill;
mod kms;
mod mongo;
mod redis;
mod slow;
mod support;
