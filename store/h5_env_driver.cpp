#include "store/h5_env_driver.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>

#include "store/env.h"

namespace sdxlb::h5 {
namespace {

thread_local int t_os_error = 0;

// The largest address: off_t is signed.
constexpr haddr_t kMaxAddr = (static_cast<haddr_t>(1) << (8 * sizeof(off_t) - 1)) - 1;

struct EnvFile {
  H5FD_t pub;  // must be first: HDF5 hands back this pointer
  Env* env = nullptr;
  int fd = -1;
  haddr_t eoa = 0;  // end of the address space HDF5 has allocated
  haddr_t eof = 0;  // end of the file's bytes
  dev_t device = 0;
  ino_t inode = 0;
  std::string path;
};

EnvFile* as_file(H5FD_t* f) {
  return reinterpret_cast<EnvFile*>(f);
}
const EnvFile* as_file(const H5FD_t* f) {
  return reinterpret_cast<const EnvFile*>(f);
}

// Pushes one error record (the innermost: h5::File's messages end with it).
void push_error(const char* func, hid_t minor, const std::string& text) {
  H5Epush2(H5E_DEFAULT, __FILE__, func, __LINE__, H5E_ERR_CLS, H5E_VFL, minor, "%s", text.c_str());
}

std::string os_reason(int err) {
  return std::strerror(err);
}

H5FD_t* env_open(const char* name, unsigned flags, hid_t /*fapl*/, haddr_t maxaddr) {
  if (name == nullptr || *name == '\0') {
    push_error(__func__, H5E_BADVALUE, "no file name");
    return nullptr;
  }
  if (maxaddr == 0 || maxaddr == HADDR_UNDEF || maxaddr > kMaxAddr) {
    push_error(__func__, H5E_BADRANGE, std::string("bad maximum address for ") + name);
    return nullptr;
  }
  int o_flags = (flags & H5F_ACC_RDWR) ? O_RDWR : O_RDONLY;
  if (flags & H5F_ACC_TRUNC) o_flags |= O_TRUNC;
  if (flags & H5F_ACC_CREAT) o_flags |= O_CREAT;
  if (flags & H5F_ACC_EXCL) o_flags |= O_EXCL;
  Env& e = env();
  const int fd = e.open(name, o_flags, 0666);
  if (fd < 0) {
    const int err = errno;
    push_error(__func__, H5E_CANTOPENFILE, std::string("cannot open ") + name + ": " + os_reason(err));
    return nullptr;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    e.close(fd);
    push_error(__func__, H5E_BADFILE, std::string("cannot stat ") + name + ": " + os_reason(err));
    return nullptr;
  }
  auto* file = new (std::nothrow) EnvFile();
  if (file == nullptr) {
    e.close(fd);
    push_error(__func__, H5E_CANTALLOC, "out of memory");
    return nullptr;
  }
  file->env = &e;
  file->fd = fd;
  file->eof = static_cast<haddr_t>(st.st_size);
  file->device = st.st_dev;
  file->inode = st.st_ino;
  file->path = name;
  return &file->pub;
}

herr_t env_close(H5FD_t* f) {
  EnvFile* file = as_file(f);
  herr_t rc = 0;
  if (file->env->close(file->fd) != 0) {
    push_error(__func__, H5E_CANTCLOSEFILE, "cannot close " + file->path + ": " + os_reason(errno));
    rc = -1;
  }
  delete file;
  return rc;
}

int env_cmp(const H5FD_t* f1, const H5FD_t* f2) {
  const EnvFile* a = as_file(f1);
  const EnvFile* b = as_file(f2);
  if (a->device != b->device) return a->device < b->device ? -1 : 1;
  if (a->inode != b->inode) return a->inode < b->inode ? -1 : 1;
  return 0;
}

herr_t env_query(const H5FD_t* /*f*/, unsigned long* flags) {
  if (flags) {
    *flags = H5FD_FEAT_AGGREGATE_METADATA | H5FD_FEAT_ACCUMULATE_METADATA | H5FD_FEAT_DATA_SIEVE |
             H5FD_FEAT_AGGREGATE_SMALLDATA | H5FD_FEAT_POSIX_COMPAT_HANDLE | H5FD_FEAT_DEFAULT_VFD_COMPATIBLE;
  }
  return 0;
}

haddr_t env_get_eoa(const H5FD_t* f, H5FD_mem_t /*type*/) {
  return as_file(f)->eoa;
}

herr_t env_set_eoa(H5FD_t* f, H5FD_mem_t /*type*/, haddr_t addr) {
  as_file(f)->eoa = addr;
  return 0;
}

haddr_t env_get_eof(const H5FD_t* f, H5FD_mem_t /*type*/) {
  return as_file(f)->eof;
}

herr_t env_get_handle(H5FD_t* f, hid_t /*fapl*/, void** handle) {
  if (handle == nullptr) return -1;
  *handle = &as_file(f)->fd;
  return 0;
}

bool overflows(haddr_t addr, size_t size) {
  return addr == HADDR_UNDEF || addr > kMaxAddr || size > kMaxAddr || addr + size > kMaxAddr;
}

herr_t env_read(H5FD_t* f, H5FD_mem_t /*type*/, hid_t /*dxpl*/, haddr_t addr, size_t size, void* buf) {
  EnvFile* file = as_file(f);
  if (overflows(addr, size)) {
    push_error(__func__, H5E_OVERFLOW, "read past the addressable range of " + file->path);
    return -1;
  }
  auto* out = static_cast<unsigned char*>(buf);
  while (size > 0) {
    const ssize_t n = file->env->pread(file->fd, out, size, static_cast<off_t>(addr));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      t_os_error = errno;
      push_error(__func__, H5E_READERROR,
                 "cannot read " + std::to_string(size) + " bytes at offset " + std::to_string(addr) + " of " +
                     file->path + ": " + os_reason(errno));
      return -1;
    }
    if (n == 0) {  // past the end of the file: HDF5 expects zeros
      std::memset(out, 0, size);
      break;
    }
    out += n;
    size -= static_cast<size_t>(n);
    addr += static_cast<haddr_t>(n);
  }
  return 0;
}

herr_t env_write(H5FD_t* f, H5FD_mem_t /*type*/, hid_t /*dxpl*/, haddr_t addr, size_t size, const void* buf) {
  EnvFile* file = as_file(f);
  if (overflows(addr, size)) {
    push_error(__func__, H5E_OVERFLOW, "write past the addressable range of " + file->path);
    return -1;
  }
  if (!write_fully(*file->env, file->fd, buf, size, static_cast<off_t>(addr))) {
    t_os_error = errno;
    push_error(__func__, H5E_WRITEERROR,
               "cannot write " + std::to_string(size) + " bytes at offset " + std::to_string(addr) + " of " +
                   file->path + ": " + os_reason(errno));
    return -1;
  }
  if (addr + size > file->eof) file->eof = addr + size;
  return 0;
}

herr_t env_truncate(H5FD_t* f, hid_t /*dxpl*/, hbool_t /*closing*/) {
  EnvFile* file = as_file(f);
  if (file->eoa == file->eof) return 0;
  if (file->env->ftruncate(file->fd, static_cast<off_t>(file->eoa)) != 0) {
    t_os_error = errno;
    push_error(__func__, H5E_SEEKERROR,
               "cannot set the length of " + file->path + " to " + std::to_string(file->eoa) +
                   " bytes: " + os_reason(errno));
    return -1;
  }
  file->eof = file->eoa;
  return 0;
}

// HDF5's file locking, as the sec2 driver does it (a file system without flock is not an error).
herr_t env_lock(H5FD_t* f, hbool_t rw) {
  EnvFile* file = as_file(f);
  if (::flock(file->fd, (rw ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0) {
    if (errno == ENOSYS) return 0;
    push_error(__func__, H5E_CANTLOCKFILE,
               "cannot lock " + file->path + ": " + os_reason(errno) +
                   " (another process has it open for writing?)");
    return -1;
  }
  return 0;
}

herr_t env_unlock(H5FD_t* f) {
  EnvFile* file = as_file(f);
  if (::flock(file->fd, LOCK_UN) != 0 && errno != ENOSYS) {
    push_error(__func__, H5E_CANTUNLOCKFILE, "cannot unlock " + file->path + ": " + os_reason(errno));
    return -1;
  }
  return 0;
}

H5FD_class_t make_class() {
  H5FD_class_t c{};
#if H5_VERSION_GE(1, 13, 2)
  c.version = H5FD_CLASS_VERSION;
  c.value = static_cast<H5FD_class_value_t>(510);  // 256..511: for drivers that are not registered with HDF5
#endif
  c.name = "sdxlb_env";
  c.maxaddr = kMaxAddr;
  c.fc_degree = H5F_CLOSE_WEAK;
  c.open = env_open;
  c.close = env_close;
  c.cmp = env_cmp;
  c.query = env_query;
  c.get_eoa = env_get_eoa;
  c.set_eoa = env_set_eoa;
  c.get_eof = env_get_eof;
  c.get_handle = env_get_handle;
  c.read = env_read;
  c.write = env_write;
  c.truncate = env_truncate;
  c.lock = env_lock;
  c.unlock = env_unlock;
  const H5FD_mem_t map[] = H5FD_FLMAP_DICHOTOMY;
  for (int i = 0; i < H5FD_MEM_NTYPES; ++i) c.fl_map[i] = map[i];
  return c;
}

}  // namespace

int last_os_error() {
  return t_os_error;
}

void clear_os_error() {
  t_os_error = 0;
}

hid_t env_driver_id() {
  static const hid_t id = [] {
    static const H5FD_class_t cls = make_class();
    return H5FDregister(&cls);
  }();
  return id;
}

}  // namespace sdxlb::h5
