//! Oar's shell executor: job stages as local processes.
