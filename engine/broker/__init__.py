"""Step 3: execution. `base` is the small interface every broker implements; `sandbox` simulates one."""
