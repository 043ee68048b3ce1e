//! The Oar job driver: stage plan, script generation, variables, masking, trace streaming.
