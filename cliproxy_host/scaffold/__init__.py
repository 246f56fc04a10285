"""cliproxy-host new: plugin project scaffolds in C and Rust."""
