// Seconds since this process was started by the OS (from /proc/self/stat; 10 ms resolution), so that
// start-up time includes loading the shared libraries. Returns -1 where /proc is not available.
#pragma once

namespace sdxlb {

double seconds_since_process_start();

}  // namespace sdxlb
