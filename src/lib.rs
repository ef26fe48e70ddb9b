//! singularity-workflow
