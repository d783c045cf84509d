#include "cluster/comm.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

namespace sdxlb {

// Tags at or above this are the collectives' own traffic on the local backend.
constexpr int kInternalTagBase = 1 << 20;

class Comm::Impl {
 public:
  virtual ~Impl() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* backend() const = 0;
  virtual Status send(int dest, int tag, const std::string& bytes, const char* hint) = 0;
  virtual StatusOr<Message> recv(int tag, const char* hint) = 0;
  virtual StatusOr<std::optional<Message>> recv_for(int tag, double timeout_s, const char* hint) = 0;
  virtual StatusOr<bool> poll(int tag, const char* hint) = 0;
  virtual Status barrier(const char* hint) = 0;
  virtual Status broadcast(std::string& value, int root, const char* hint) = 0;
  virtual Status broadcast_bytes(void* data, size_t size, int root, const char* hint) = 0;
  virtual StatusOr<std::vector<std::string>> all_gather(const std::string& value, const char* hint) = 0;
  virtual StatusOr<Comm> split_node(const char* hint) = 0;
  virtual StatusOr<Comm> split(int colour, const char* hint) = 0;
  [[noreturn]] virtual void abort(int code) = 0;
};

namespace {

// ---------------------------------------------------------------------------------------------------------
// Local backend: N ranks in one process, one mailbox each.

struct LocalShared {
  explicit LocalShared(int n) : boxes(n) {}
  struct Box {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Message> queue;
  };
  std::vector<Box> boxes;

  // The groups that split() made, by (the split's sequence number, colour): the first member to arrive
  // creates the group, the others join it; the last one to join removes the entry.
  struct Split {
    std::shared_ptr<LocalShared> group;
    int joined = 0;
  };
  std::mutex splits_mu;
  std::map<std::pair<uint64_t, int>, Split> splits;

  std::shared_ptr<LocalShared> join_split(uint64_t seq, int colour, int members) {
    std::lock_guard<std::mutex> lock(splits_mu);
    Split& s = splits[{seq, colour}];
    if (!s.group) s.group = std::make_shared<LocalShared>(members);
    std::shared_ptr<LocalShared> group = s.group;
    if (++s.joined == members) splits.erase({seq, colour});
    return group;
  }
};

class LocalImpl final : public Comm::Impl {
 public:
  LocalImpl(std::shared_ptr<LocalShared> shared, int rank) : shared_(std::move(shared)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(shared_->boxes.size()); }
  const char* backend() const override { return "local"; }

  Status send(int dest, int tag, const std::string& bytes, const char* hint) override {
    if (dest < 0 || dest >= size())
      return internal_error(std::string(hint) + ": send to rank " + std::to_string(dest) + " of " +
                            std::to_string(size()));
    auto& box = shared_->boxes[dest];
    {
      std::lock_guard<std::mutex> lock(box.mu);
      box.queue.push_back(Message{rank_, tag, bytes});
    }
    box.cv.notify_all();
    return Status::ok();
  }

  StatusOr<Message> recv(int tag, const char* hint) override { return recv_from(-1, tag); }

  StatusOr<std::optional<Message>> recv_for(int tag, double timeout_s, const char* hint) override {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                               std::chrono::duration<double>(std::max(0.0, timeout_s)));
    auto& box = shared_->boxes[rank_];
    std::unique_lock<std::mutex> lock(box.mu);
    for (;;) {
      if (auto m = take(box, -1, tag)) return m;
      if (box.cv.wait_until(lock, deadline) == std::cv_status::timeout) {
        if (auto m = take(box, -1, tag)) return m;
        return std::optional<Message>();
      }
    }
  }

  StatusOr<bool> poll(int tag, const char* hint) override {
    auto& box = shared_->boxes[rank_];
    std::lock_guard<std::mutex> lock(box.mu);
    for (const auto& m : box.queue)
      if (matches(m, -1, tag)) return true;
    return false;
  }

  static bool matches(const Message& m, int source, int tag) {
    const bool tag_ok = tag == kAnyTag ? m.tag < kInternalTagBase : m.tag == tag;
    return tag_ok && (source < 0 || m.source == source);
  }

  // Removes and returns the first queued message matching source (or any, -1) and tag; the caller holds mu.
  static std::optional<Message> take(LocalShared::Box& box, int source, int tag) {
    for (auto it = box.queue.begin(); it != box.queue.end(); ++it) {
      if (matches(*it, source, tag)) {
        Message m = std::move(*it);
        box.queue.erase(it);
        return m;
      }
    }
    return std::nullopt;
  }

  // Receives the first queued message matching source (or any, -1) and tag (or any).
  Message recv_from(int source, int tag) {
    auto& box = shared_->boxes[rank_];
    std::unique_lock<std::mutex> lock(box.mu);
    for (;;) {
      if (auto m = take(box, source, tag)) return std::move(*m);
      box.cv.wait(lock);
    }
  }

  Status barrier(const char* hint) override {
    auto all = all_gather("", hint);
    return all.status();
  }

  Status broadcast(std::string& value, int root, const char* hint) override {
    const int tag = kInternalTagBase + 1;
    if (rank_ == root) {
      for (int r = 0; r < size(); ++r)
        if (r != root) SDXLB_RETURN_IF_ERROR(send(r, tag, value, hint));
    } else {
      value = recv_from(root, tag).bytes;
    }
    return Status::ok();
  }

  Status broadcast_bytes(void* data, size_t size, int root, const char* hint) override {
    const int tag = kInternalTagBase + 3;
    if (rank_ == root) {
      const std::string bytes(static_cast<const char*>(data), size);
      for (int r = 0; r < this->size(); ++r)
        if (r != root) SDXLB_RETURN_IF_ERROR(send(r, tag, bytes, hint));
      return Status::ok();
    }
    const Message m = recv_from(root, tag);
    if (m.bytes.size() != size)
      return internal_error(std::string(hint) + ": broadcast of " + std::to_string(m.bytes.size()) +
                            " bytes into a buffer of " + std::to_string(size));
    std::memcpy(data, m.bytes.data(), size);
    return Status::ok();
  }

  StatusOr<std::vector<std::string>> all_gather(const std::string& value, const char* hint) override {
    const int tag = kInternalTagBase + 2;
    for (int r = 0; r < size(); ++r)
      if (r != rank_) SDXLB_RETURN_IF_ERROR(send(r, tag, value, hint));
    std::vector<std::string> out(size());
    out[rank_] = value;
    for (int r = 0; r < size(); ++r)
      if (r != rank_) out[r] = recv_from(r, tag).bytes;
    return out;
  }

  StatusOr<Comm> split_node(const char* hint) override;
  StatusOr<Comm> split(int colour, const char* hint) override;
  [[noreturn]] void abort(int code) override { std::_Exit(code); }

 private:
  std::shared_ptr<LocalShared> shared_;
  int rank_;
  uint64_t splits_ = 0;  // split() calls so far: every rank makes the same calls, so it names the split
};

// ---------------------------------------------------------------------------------------------------------
// MPI backend.

std::string mpi_error(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, buf, &len);
  return std::string(buf, len);
}

Status mpi_status(int rc, const char* hint, const std::string& what) {
  if (rc == MPI_SUCCESS) return Status::ok();
  return Status(StatusCode::kIoError, std::string(hint) + ": MPI " + what + " failed: " + mpi_error(rc));
}

class MpiImpl final : public Comm::Impl {
 public:
  explicit MpiImpl(MPI_Comm comm) : comm_(comm) {
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiImpl() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "mpi"; }

  Status send(int dest, int tag, const std::string& bytes, const char* hint) override {
    if (bytes.size() > static_cast<size_t>(INT32_MAX))
      return internal_error(std::string(hint) + ": message of " + std::to_string(bytes.size()) +
                            " bytes is too large");
    return mpi_status(MPI_Send(bytes.data(), static_cast<int>(bytes.size()), MPI_BYTE, dest, tag, comm_),
                      hint, "send to rank " + std::to_string(dest));
  }

  StatusOr<Message> recv(int tag, const char* hint) override {
    MPI_Status st;
    int rc = MPI_Probe(MPI_ANY_SOURCE, tag == kAnyTag ? MPI_ANY_TAG : tag, comm_, &st);
    SDXLB_RETURN_IF_ERROR(mpi_status(rc, hint, "probe"));
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    Message m;
    m.source = st.MPI_SOURCE;
    m.tag = st.MPI_TAG;
    m.bytes.resize(count);
    rc = MPI_Recv(m.bytes.data(), count, MPI_BYTE, st.MPI_SOURCE, st.MPI_TAG, comm_, MPI_STATUS_IGNORE);
    SDXLB_RETURN_IF_ERROR(mpi_status(rc, hint, "receive from rank " + std::to_string(st.MPI_SOURCE)));
    return m;
  }

  StatusOr<std::optional<Message>> recv_for(int tag, double timeout_s, const char* hint) override {
    // MPI has no receive with a timeout: poll, sleeping 1 ms between probes (the coordinator's messages are
    // a few per second).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    for (;;) {
      SDXLB_ASSIGN_OR_RETURN(const bool waiting, poll(tag, hint));
      if (waiting) {
        SDXLB_ASSIGN_OR_RETURN(auto m, recv(tag, hint));
        return std::optional<Message>(std::move(m));
      }
      if (std::chrono::steady_clock::now() >= deadline) return std::optional<Message>();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  StatusOr<bool> poll(int tag, const char* hint) override {
    int flag = 0;
    MPI_Status st;
    const int rc = MPI_Iprobe(MPI_ANY_SOURCE, tag == kAnyTag ? MPI_ANY_TAG : tag, comm_, &flag, &st);
    SDXLB_RETURN_IF_ERROR(mpi_status(rc, hint, "probe"));
    return flag != 0;
  }

  Status barrier(const char* hint) override { return mpi_status(MPI_Barrier(comm_), hint, "barrier"); }

  Status broadcast(std::string& value, int root, const char* hint) override {
    unsigned long long n = value.size();
    SDXLB_RETURN_IF_ERROR(
        mpi_status(MPI_Bcast(&n, 1, MPI_UNSIGNED_LONG_LONG, root, comm_), hint, "broadcast"));
    value.resize(n);
    return broadcast_bytes(value.data(), value.size(), root, hint);
  }

  Status broadcast_bytes(void* data, size_t size, int root, const char* hint) override {
    // MPI counts are ints: pieces of at most 1 GiB.
    constexpr size_t kPiece = size_t{1} << 30;
    char* p = static_cast<char*>(data);
    for (size_t done = 0; done < size; done += kPiece) {
      const int n = static_cast<int>(std::min(kPiece, size - done));
      SDXLB_RETURN_IF_ERROR(mpi_status(MPI_Bcast(p + done, n, MPI_BYTE, root, comm_), hint, "broadcast"));
    }
    return Status::ok();
  }

  StatusOr<std::vector<std::string>> all_gather(const std::string& value, const char* hint) override {
    int mine = static_cast<int>(value.size());
    std::vector<int> lens(size_), offs(size_);
    SDXLB_RETURN_IF_ERROR(
        mpi_status(MPI_Allgather(&mine, 1, MPI_INT, lens.data(), 1, MPI_INT, comm_), hint, "all-gather"));
    int total = 0;
    for (int r = 0; r < size_; ++r) {
      offs[r] = total;
      total += lens[r];
    }
    std::string all(total, '\0');
    SDXLB_RETURN_IF_ERROR(mpi_status(
        MPI_Allgatherv(value.data(), mine, MPI_BYTE, all.data(), lens.data(), offs.data(), MPI_BYTE, comm_),
        hint, "all-gather"));
    std::vector<std::string> out(size_);
    for (int r = 0; r < size_; ++r) out[r] = all.substr(offs[r], lens[r]);
    return out;
  }

  StatusOr<Comm> split_node(const char* hint) override;
  StatusOr<Comm> split(int colour, const char* hint) override;
  [[noreturn]] void abort(int code) override {
    MPI_Abort(comm_, code);
    std::_Exit(code);
  }

 private:
  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace

// Friend-free construction: Comm's private constructor is reachable through this helper.
struct CommFactory {
  static Comm make(std::unique_ptr<Comm::Impl> impl);
};

namespace {
Status check_colour(int colour, const char* hint) {
  if (colour < kNoColour)
    return invalid_argument(std::string(hint) + ": split colour " + std::to_string(colour) +
                            " is negative; use a colour >= 0, or kNoColour to take no part");
  return Status::ok();
}

StatusOr<Comm> LocalImpl::split_node(const char* hint) {
  // One process is one node: a fresh group of the same ranks.
  return split(0, hint);
}

StatusOr<Comm> LocalImpl::split(int colour, const char* hint) {
  SDXLB_RETURN_IF_ERROR(check_colour(colour, hint));
  const uint64_t seq = splits_++;
  SDXLB_ASSIGN_OR_RETURN(auto colours, all_gather(std::to_string(colour), hint));
  if (colour == kNoColour) return Comm::serial();
  int members = 0, new_rank = 0;
  for (int r = 0; r < size(); ++r) {
    if (std::stoi(colours[r]) != colour) continue;
    if (r == rank_) new_rank = members;
    ++members;
  }
  return CommFactory::make(std::make_unique<LocalImpl>(shared_->join_split(seq, colour, members), new_rank));
}

StatusOr<Comm> MpiImpl::split_node(const char* hint) {
  MPI_Comm node;
  int rc = MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
  SDXLB_RETURN_IF_ERROR(mpi_status(rc, hint, "split by node"));
  return CommFactory::make(std::make_unique<MpiImpl>(node));
}

StatusOr<Comm> MpiImpl::split(int colour, const char* hint) {
  SDXLB_RETURN_IF_ERROR(check_colour(colour, hint));
  MPI_Comm part;
  int rc = MPI_Comm_split(comm_, colour == kNoColour ? MPI_UNDEFINED : colour, rank_, &part);
  SDXLB_RETURN_IF_ERROR(mpi_status(rc, hint, "split by colour"));
  if (part == MPI_COMM_NULL) return Comm::serial();
  return CommFactory::make(std::make_unique<MpiImpl>(part));
}
}  // namespace

Comm CommFactory::make(std::unique_ptr<Comm::Impl> impl) {
  return Comm(std::move(impl));
}

Comm::Comm(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Comm::Comm(Comm&&) noexcept = default;
Comm& Comm::operator=(Comm&&) noexcept = default;
Comm::~Comm() = default;

Comm Comm::serial() {
  return Comm(std::make_unique<LocalImpl>(std::make_shared<LocalShared>(1), 0));
}

std::vector<Comm> Comm::local_group(int n) {
  auto shared = std::make_shared<LocalShared>(n);
  std::vector<Comm> out;
  for (int r = 0; r < n; ++r) out.push_back(Comm(std::make_unique<LocalImpl>(shared, r)));
  return out;
}

Comm Comm::mpi_world() {
  MPI_Comm dup;
  MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  return Comm(std::make_unique<MpiImpl>(dup));
}

int Comm::rank() const {
  return impl_->rank();
}
int Comm::size() const {
  return impl_->size();
}
const char* Comm::backend() const {
  return impl_->backend();
}
Status Comm::send(int dest, int tag, const std::string& bytes, const char* hint) {
  return impl_->send(dest, tag, bytes, hint);
}
StatusOr<Message> Comm::recv(int tag, const char* hint) {
  return impl_->recv(tag, hint);
}
StatusOr<std::optional<Message>> Comm::recv_for(int tag, double timeout_s, const char* hint) {
  return impl_->recv_for(tag, timeout_s, hint);
}
StatusOr<bool> Comm::poll(int tag, const char* hint) {
  return impl_->poll(tag, hint);
}
Status Comm::barrier(const char* hint) {
  return impl_->barrier(hint);
}
Status Comm::broadcast(std::string& value, int root, const char* hint) {
  return impl_->broadcast(value, root, hint);
}
Status Comm::broadcast_bytes(void* data, size_t size, int root, const char* hint) {
  return impl_->broadcast_bytes(data, size, root, hint);
}
StatusOr<std::vector<std::string>> Comm::all_gather(const std::string& value, const char* hint) {
  return impl_->all_gather(value, hint);
}
StatusOr<Comm> Comm::split_node(const char* hint) {
  return impl_->split_node(hint);
}
StatusOr<Comm> Comm::split(int colour, const char* hint) {
  return impl_->split(colour, hint);
}
void Comm::abort(int code) {
  impl_->abort(code);
  std::_Exit(code);  // not reached: every backend exits
}

// ---------------------------------------------------------------------------------------------------------

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(v)) return true;
  // Under srun, SLURM_PROCID is set for each task; a batch script's own shell has SLURM_JOB_ID but no step.
  return std::getenv("SLURM_STEP_ID") && std::getenv("SLURM_PROCID");
}

MpiSession::MpiSession(int* argc, char*** argv, bool force) {
  if (!force && !launched_by_mpi()) return;
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  active_ = true;
}

MpiSession::~MpiSession() {
  if (active_) MPI_Finalize();
}

Comm MpiSession::world() const {
  return active_ ? Comm::mpi_world() : Comm::serial();
}

}  // namespace sdxlb
