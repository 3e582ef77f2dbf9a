package ami

// CPUTime exposes cpuTime to the external benchmarks.
var CPUTime = cpuTime
