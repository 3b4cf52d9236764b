// An RL pipeline on smos with nothing but POSIX calls: the C++ twin of rl_pipeline.py.
//
//   actors  --open(.push)/pwrite/close-->  <prefix>traj     --open(.pop)/mmap/close-->  learner
//   actors  <--open(.latest)/mmap/close--  <prefix>weights  <--open(O_TRUNC)/write----  learner
//
// Actors (forked processes) read the latest weights, and push trajectories as the typed tracks
// of one entry each. The learner pops them (blocking), checks each one, and after every batch
// publishes a new version of `weights` the way cp does: open(O_WRONLY|O_CREAT|O_TRUNC), write,
// close, an atomic replace. Every trajectory must arrive exactly once and intact, and every read
// of the weights must be one whole version. Exit status 0, or 1 with what went wrong.
//
//   rl_pipeline MOUNTPOINT [actors [trajectories-per-actor [steps [batch [weights-bytes]]]]]
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <smos/control.h>
#include <smos/xattr.h>

namespace {

constexpr int kObsBytes = 84 * 84;  // one step's observation

struct Config {
  std::string traj, weights;  // object paths
  int actors = 4, trajectories = 50, steps = 16, batch = 8;
  std::size_t weights_bytes = 1 << 20;
};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "rl_pipeline: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

// rm -r: unlink the entries (never the control files), then rmdir. ENOENT is fine.
void remove_object(const std::string& dir) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    if (DIR* d = opendir(dir.c_str())) {
      while (dirent* de = readdir(d)) {
        const std::string name = de->d_name;
        if (name == "." || name == ".." || name == smos::control::kPush ||
            name == smos::control::kPop || name == smos::control::kLatest) {
          continue;
        }
        unlink((dir + "/" + name).c_str());
      }
      closedir(d);
    }
    if (rmdir(dir.c_str()) == 0 || errno == ENOENT) return;
    if (errno != ENOTEMPTY) die("rmdir " + dir);
  }
  die("rmdir " + dir);
}

// Track name -> byte offset, from an entry's "name:dtype:DIMS@offset,..." layout.
std::map<std::string, std::size_t> track_offsets(int fd) {
  char buf[1024];
  ssize_t n = fgetxattr(fd, smos::xattr::kTracks, buf, sizeof buf - 1);
  if (n < 0) die("fgetxattr user.smos.tracks");
  buf[n] = '\0';
  std::map<std::string, std::size_t> out;
  for (char* spec = std::strtok(buf, ","); spec != nullptr; spec = std::strtok(nullptr, ",")) {
    const char* at = std::strchr(spec, '@');
    out[std::string(spec, std::strchr(spec, ':'))] = std::strtoull(at + 1, nullptr, 10);
  }
  return out;
}

// The bytes of trajectory i of an actor: a pseudo-random stream seeded by (actor, i).
std::uint64_t next(std::uint64_t& s) {
  s = s * 6364136223846793005ull + 1442695040888963407ull;
  return s >> 33;
}

void fill(int actor, int i, int steps, std::uint8_t* obs, std::int64_t* action, float* reward) {
  std::uint64_t s = (std::uint64_t(actor) << 32) | std::uint32_t(i);
  for (int k = 0; k < steps * kObsBytes; ++k) obs[k] = std::uint8_t(next(s));
  for (int k = 0; k < steps; ++k) action[k] = std::int64_t(next(s) % 6);
  for (int k = 0; k < steps; ++k) reward[k] = float(next(s) % 1000) / 1000.0f;
}

// Reads the latest weights through a zero-copy mapping of their segment; returns the version,
// or -1 if it was not one whole version. The descriptor of .latest is the lease: the segment
// holds these bytes while it is open. (A mapping of the mounted file itself may take SIGBUS
// while the learner replaces the weights; see smos(7), BUGS.)
long read_latest_weights(const Config& c) {
  int fd = open((c.weights + "/" + smos::control::kLatest).c_str(), O_RDONLY);
  if (fd < 0) die("open .latest");
  char segment[256];
  ssize_t len = fgetxattr(fd, smos::xattr::kSegment, segment, sizeof segment - 1);
  if (len < 0) die("fgetxattr .latest");
  segment[len] = '\0';
  int seg = open(segment, O_RDONLY);
  if (seg < 0) die("open segment");
  struct stat st;
  if (fstat(seg, &st) != 0) die("fstat segment");
  if (std::size_t(st.st_size) != c.weights_bytes) {
    close(seg);
    close(fd);
    return -1;
  }
  void* p = mmap(nullptr, st.st_size, PROT_READ, MAP_SHARED, seg, 0);
  close(seg);
  if (p == MAP_FAILED) die("mmap segment");
  const float* w = static_cast<const float*>(p);
  const std::size_t n = st.st_size / sizeof(float);
  long version = long(w[0]);
  for (std::size_t k = 0; k < n && version >= 0; ++k) {
    if (w[k] != w[0]) version = -1;
  }
  munmap(p, st.st_size);
  close(fd);  // the lease ends after the mapping
  return version;
}

void publish_weights(const Config& c, long version) {
  std::vector<float> w(c.weights_bytes / sizeof(float), float(version));
  int fd = open((c.weights + "/weights").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) die("open weights for replace");
  const char* p = reinterpret_cast<const char*>(w.data());
  for (std::size_t done = 0; done < c.weights_bytes;) {
    ssize_t n = write(fd, p + done, c.weights_bytes - done);
    if (n < 0) die("write weights");
    done += n;
  }
  if (close(fd) != 0) die("close weights");  // commits: readers switch to this version
}

int actor(const Config& c, int a) {
  long last = 0;
  for (int i = 0; i < c.trajectories; ++i) {
    long version = read_latest_weights(c);
    if (version < last) {
      std::fprintf(stderr, "rl_pipeline: actor %d read a torn or older weights version\n", a);
      return 1;
    }
    last = version;
    int fd;
    while ((fd = open((c.traj + "/" + smos::control::kPush).c_str(), O_WRONLY)) < 0) {
      if (errno != ENOSPC) die("open .push");
      usleep(1000);  // the queue is full: the learner is behind
    }
    auto off = track_offsets(fd);
    struct stat st;
    if (fstat(fd, &st) != 0) die("fstat .push");
    std::vector<std::uint8_t> block(st.st_size);  // the entry, all tracks laid out
    auto* head = reinterpret_cast<std::int64_t*>(&block[off["head"]]);
    head[0] = a;
    head[1] = i;
    head[2] = version;
    fill(a, i, c.steps, &block[off["obs"]], reinterpret_cast<std::int64_t*>(&block[off["action"]]),
         reinterpret_cast<float*>(&block[off["reward"]]));
    if (pwrite(fd, block.data(), block.size(), 0) != ssize_t(block.size())) die("pwrite .push");
    if (close(fd) != 0) die("close .push");  // commits the entry
  }
  return 0;
}

int learner(const Config& c) {
  const int total = c.actors * c.trajectories;
  std::set<std::pair<int, int>> seen;
  int bad = 0;
  long version = 0;
  std::vector<std::uint8_t> obs(c.steps * kObsBytes);
  std::vector<std::int64_t> action(c.steps);
  std::vector<float> reward(c.steps);
  while (int(seen.size()) < total) {
    for (int b = 0; b < c.batch && int(seen.size()) < total; ++b) {
      int fd = open((c.traj + "/" + smos::control::kPop).c_str(), O_RDONLY);  // blocks
      if (fd < 0) die("open .pop");
      auto off = track_offsets(fd);
      struct stat st;
      if (fstat(fd, &st) != 0) die("fstat .pop");
      void* p = mmap(nullptr, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
      if (p == MAP_FAILED) die("mmap .pop");
      const auto* base = static_cast<const std::uint8_t*>(p);
      const auto* head = reinterpret_cast<const std::int64_t*>(base + off["head"]);
      const int a = int(head[0]), i = int(head[1]);
      fill(a, i, c.steps, obs.data(), action.data(), reward.data());
      if (std::memcmp(base + off["obs"], obs.data(), obs.size()) != 0 ||
          std::memcmp(base + off["action"], action.data(), action.size() * 8) != 0 ||
          std::memcmp(base + off["reward"], reward.data(), reward.size() * 4) != 0 ||
          !seen.insert({a, i}).second) {
        ++bad;
      }
      munmap(p, st.st_size);
      close(fd);  // frees the popped entry
    }
    publish_weights(c, ++version);
  }
  std::printf("rl_pipeline: learner popped %zu trajectories, published %ld versions\n",
              seen.size(), version);
  if (bad != 0) std::fprintf(stderr, "rl_pipeline: %d bad or duplicate trajectories\n", bad);
  return bad == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MOUNTPOINT [actors [trajectories [steps [batch [bytes]]]]]\n",
                 argv[0]);
    return 2;
  }
  Config c;
  const std::string prefix = std::string(argv[1]) + "/cc_" + std::to_string(getpid()) + "_";
  c.traj = prefix + "traj";
  c.weights = prefix + "weights";
  if (argc > 2) c.actors = std::atoi(argv[2]);
  if (argc > 3) c.trajectories = std::atoi(argv[3]);
  if (argc > 4) c.steps = std::atoi(argv[4]);
  if (argc > 5) c.batch = std::atoi(argv[5]);
  if (argc > 6) c.weights_bytes = std::strtoull(argv[6], nullptr, 10) / 4 * 4;

  // The objects: a bounded queue of typed trajectories, and the weights.
  if (mkdir(c.traj.c_str(), 0755) != 0 || mkdir(c.weights.c_str(), 0755) != 0) die("mkdir");
  const std::string layout = "head:int64:4,obs:uint8:" + std::to_string(c.steps) + "x84x84" +
                             ",action:int64:" + std::to_string(c.steps) +
                             ",reward:float32:" + std::to_string(c.steps);
  if (setxattr(c.traj.c_str(), smos::xattr::kTracks, layout.data(), layout.size(), 0) != 0 ||
      setxattr(c.traj.c_str(), smos::xattr::kCapacity, "64", 2, 0) != 0) {
    die("setxattr on the trajectory object");
  }
  publish_weights(c, 0);

  const auto t0 = std::chrono::steady_clock::now();
  std::map<pid_t, std::string> procs;
  for (int a = 0; a < c.actors; ++a) {
    pid_t pid = fork();
    if (pid == 0) {
      int rc = actor(c, a);
      std::fflush(nullptr);
      _exit(rc);
    }
    procs[pid] = "actor " + std::to_string(a);
  }
  pid_t pid = fork();
  if (pid == 0) {
    int rc = learner(c);
    std::fflush(nullptr);
    _exit(rc);
  }
  procs[pid] = "learner";
  int status = 0;
  while (!procs.empty()) {
    int ws;
    pid = wait(&ws);
    if (pid < 0) die("wait");
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
      if (WIFSIGNALED(ws)) {
        std::fprintf(stderr, "rl_pipeline: %s killed by %s\n", procs[pid].c_str(),
                     strsignal(WTERMSIG(ws)));
      } else {
        std::fprintf(stderr, "rl_pipeline: %s failed\n", procs[pid].c_str());
      }
      // Removing the queue wakes a learner blocked in open(.pop) with ENOENT.
      if (status == 0) remove_object(c.traj);
      status = 1;
    }
    procs.erase(pid);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("rl_pipeline: %d actors x %d trajectories in %.2f s: %.0f trajectories/s\n",
              c.actors, c.trajectories, s, c.actors * c.trajectories / s);
  remove_object(c.traj);
  remove_object(c.weights);
  return status;
}
