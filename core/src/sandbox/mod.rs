//! OS-level confinement: paths beneath a root, process limits, Landlock, seccomp.
