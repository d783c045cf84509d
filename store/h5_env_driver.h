// An HDF5 virtual file driver ("sdxlb_env") that does all of its file I/O through the current Env
// (store/env.h): open, pread, pwrite, ftruncate and close. It is the sec2 (POSIX) driver's behaviour, with
// the calls routed through the seam, so that tests can fail any read or write of an HDF5 file. Files it
// writes are ordinary HDF5 files (no driver information in the superblock): h5py and every other reader
// open them with their default driver.
//
// A failed call pushes an HDF5 error whose text names the file, the operation and the OS reason (for
// example "cannot write 3145728 bytes at offset 6144 of out/segments/seg-....h5.tmp: No space left on
// device"), which h5::File's errors then carry.
#pragma once

#include <hdf5.h>

namespace sdxlb::h5 {

/// The driver's id, registered with HDF5 on first use (process-wide). H5I_INVALID_HID when HDF5 refuses it.
hid_t env_driver_id();

/// The errno of the last read or write this thread's files failed with since clear_os_error() (0: none).
/// h5_error uses it to tell a storage failure (kIoError) from bytes that are wrong (kDataLoss).
int last_os_error();
void clear_os_error();

}  // namespace sdxlb::h5
