#include "grpc_service.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <unordered_set>

#include <nlohmann/json.hpp>
#include <omp.h>
#include <spdlog/spdlog.h>

#include "mamba/recommendation/migrations.h"
#include "mamba/recommendation/store.h"
#include "mamba/serve/common_proto.h"
#include "mamba/serve/errors.h"
#include "mamba/serve/logging.h"

namespace mamba::recommendation {

namespace sv = serve;
using grpc::StatusCode;

// ---- connection pool ----------------------------------------------------------------

ConnectionPool::Lease::~Lease() {
  std::lock_guard<std::mutex> lk(pool_.mu_);
  if (!conn_ || !conn_->is_open()) {
    pool_.pids_.erase(pid_);
    return;
  }
  pool_.idle_.emplace_back(std::move(conn_), pid_);
}

ConnectionPool::Lease ConnectionPool::acquire() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    while (!idle_.empty()) {
      auto [c, pid] = std::move(idle_.back());
      idle_.pop_back();
      if (c->is_open()) return Lease(*this, std::move(c), pid);
      pids_.erase(pid);
    }
  }
  try {
    auto c = std::make_unique<pqxx::connection>(url_);
    const int pid = c->backendpid();
    {
      std::lock_guard<std::mutex> lk(mu_);
      pids_.insert(pid);
    }
    return Lease(*this, std::move(c), pid);
  } catch (const pqxx::broken_connection&) {
    // The URL may carry a password: not in the message.
    throw serve::ServiceError(grpc::StatusCode::UNAVAILABLE, "the event store is unreachable");
  }
}

bool ConnectionPool::owns_backend(int pid) const {
  std::lock_guard<std::mutex> lk(mu_);
  return pids_.count(pid) != 0;
}

// ---- the write listener ------------------------------------------------------------------

namespace {

constexpr const char* kChannel = "mamba_rec_interactions";

class Receiver final : public pqxx::notification_receiver {
 public:
  Receiver(pqxx::connection_base& c, WriteListener& l) : pqxx::notification_receiver(c, kChannel), l_(l) {}
  void operator()(const std::string& payload, int backend_pid) override { l_.on_notification(payload, backend_pid); }

 private:
  WriteListener& l_;
};

}  // namespace

WriteListener::WriteListener(std::string url, Hooks hooks) : url_(std::move(url)), hooks_(std::move(hooks)) {
  thread_ = std::thread([this] { run(); });
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait_for(lk, std::chrono::seconds(5), [this] { return tried_; });
}

WriteListener::~WriteListener() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void WriteListener::on_notification(const std::string& payload, int pid) {
  if (hooks_.own_backend(pid)) return;
  ++notifications_;
  if (payload == "*") return hooks_.drop_all();
  const auto j = nlohmann::json::parse(payload, nullptr, false);
  if (!j.is_array()) return hooks_.drop_all();
  std::vector<std::string> users;
  for (const auto& u : j) {
    if (!u.is_string()) return hooks_.drop_all();
    users.push_back(u.get<std::string>());
  }
  hooks_.drop(users);
}

void WriteListener::run() {
  while (!stop_) {
    try {
      pqxx::connection c(url_);
      Receiver r(c, *this);  // LISTEN
      hooks_.drop_all();     // what was cached before may have missed notifications
      listening_.store(true, std::memory_order_release);
      {
        std::lock_guard<std::mutex> lk(mu_);
        tried_ = true;
      }
      cv_.notify_all();
      sv::log_event(spdlog::level::info, "listening for store writes", {{"channel", kChannel}});
      while (!stop_) c.await_notification(0, 200000);  // dispatches to r; throws when the link breaks
    } catch (const std::exception& e) {
      const bool was = listening_.exchange(false);
      if (was) sv::log_event(spdlog::level::warn, "store write listener lost; cache off until it reconnects",
                             {{"error", e.what()}});
    }
    listening_.store(false);
    std::unique_lock<std::mutex> lk(mu_);
    tried_ = true;
    cv_.notify_all();
    cv_.wait_for(lk, std::chrono::seconds(1), [this] { return stop_.load(); });
  }
}

namespace {

// Runs `f` with the store's errors translated: an unknown key is NOT_FOUND naming it, a
// lost database UNAVAILABLE (StoreError, a mamba::Error, stays INVALID_ARGUMENT).
template <class F>
auto with_store(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const UnknownKeyError& e) {
    throw sv::ServiceError(StatusCode::NOT_FOUND, e.kind() + " '" + e.key() + "' is not known", e.kind() == "user" ? "user_id" : "item_id");
  } catch (const pqxx::broken_connection& e) {
    throw sv::ServiceError(StatusCode::UNAVAILABLE, std::string("the event store is unreachable: ") + e.what());
  }
}

// The request threads (gRPC's, many) run their prefills and steps single-threaded: OpenMP
// teams started from each of them would oversubscribe the cores many times over. The
// scoring batcher's one worker keeps the process's OpenMP threads (OMP_NUM_THREADS) for the
// blocked top-k. omp_set_num_threads() sets the calling thread's value only.
void request_thread_kernels_single_threaded() {
  thread_local bool done = false;
  if (!done) {
    omp_set_num_threads(1);
    done = true;
  }
}

std::string model_key(const sv::LoadedModelInfo& info) { return info.name + "/" + std::to_string(info.version); }

void fill_response(const RecModel& m, const sv::LoadedModelInfo& info, const std::vector<ScoredId>& top,
                   v1::RecommendResponse* resp) {
  resp->set_model_name(info.name);
  resp->set_model_version(info.version);
  int32_t rank = 0;
  for (const ScoredId& s : top) {
    auto* it = resp->add_items();
    it->set_item_id(m.items.key(s.id));
    it->set_score(s.score);
    it->set_rank(++rank);
  }
}

template <class Req, class Window>  // Window: the ids seen (a deque or a vector)
std::unordered_set<int32_t> exclusions(const RecModel& m, const Req& req, const Window& window) {
  std::unordered_set<int32_t> ex;
  ex.reserve(static_cast<size_t>((req.exclude_seen() ? window.size() : 0) + static_cast<size_t>(req.exclude_items_size())));
  if (req.exclude_seen()) ex.insert(window.begin(), window.end());
  for (const auto& key : req.exclude_items()) {
    const int32_t id = m.items.find(key);
    if (id > 0) ex.insert(id);
  }
  return ex;
}

int cores() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

int work_threads(const RecServiceOptions& o) {
  return o.work_threads > 0 ? static_cast<int>(o.work_threads) : std::max(4, 2 * cores());
}

// Batched prefills running at once: one per core by default (a batch runs single-threaded
// and costs about the same CPU per window as one prefill: NOTES.md, so fewer workers than
// cores would leave cores idle under a cold load); without batching as many as the pool
// has threads (every miss prefilled at once, as before batching).
int prefill_workers(const RecServiceOptions& o) {
  if (o.prefill_workers > 0) return static_cast<int>(o.prefill_workers);
  return o.prefill_batch > 1 ? cores() : work_threads(o);
}

}  // namespace

// ---- filters -------------------------------------------------------------------------

std::shared_ptr<const AllowSet> FilterCache::allow(const std::string& model_key,
                                                   const std::vector<AttributeFilter>& filters,
                                                   const std::function<AttributeIndex()>& load) {
  const auto now = std::chrono::steady_clock::now();
  Index idx;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = indexes_.find(model_key);
    if (it != indexes_.end() && now - it->second.loaded < refresh_) idx = it->second;
  }
  if (!idx.index) {
    std::lock_guard<std::mutex> ll(load_mu_);
    {
      std::lock_guard<std::mutex> lk(mu_);  // another call may have loaded it meanwhile
      auto it = indexes_.find(model_key);
      if (it != indexes_.end() && now - it->second.loaded < refresh_) idx = it->second;
    }
    if (!idx.index) {
      auto fresh = std::make_shared<const AttributeIndex>(load());
      std::lock_guard<std::mutex> lk(mu_);
      idx = {std::move(fresh), std::chrono::steady_clock::now(), ++generations_};
      indexes_[model_key] = idx;
    }
  }
  const std::string key = model_key + "\n" + std::to_string(idx.generation) + "\n" + AttributeIndex::canonical(filters);
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = sets_.find(key);
    if (it != sets_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      return it->second->second;
    }
  }
  auto set = std::make_shared<const AllowSet>(idx.index->allow(filters));  // throws FilterError
  std::lock_guard<std::mutex> lk(mu_);
  if (sets_.count(key)) return set;
  lru_.emplace_front(key, set);
  sets_[key] = lru_.begin();
  while (lru_.size() > capacity_) {
    sets_.erase(lru_.back().first);
    lru_.pop_back();
  }
  return set;
}

// ---- the work pool ---------------------------------------------------------------------

WorkPool::WorkPool(int threads) {
  for (int i = 0; i < std::max(1, threads); ++i)
    threads_.emplace_back([this] {
      std::unique_lock<std::mutex> lk(mu_);
      for (;;) {
        cv_.wait(lk, [this] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) return;  // stopping, nothing left
        auto task = std::move(tasks_.front());
        tasks_.pop_front();
        lk.unlock();
        task();
        lk.lock();
      }
    });
}

WorkPool::~WorkPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void WorkPool::post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    tasks_.push_back(std::move(task));
  }
  cv_.notify_one();
}

// ---- the service ----------------------------------------------------------------------

RecommendationServiceImpl::RecommendationServiceImpl(sv::Runtime& rt, sv::ModelRepository<RecModel>& repo,
                                                     RecServiceOptions opts)
    : rt_(rt),
      repo_(repo),
      opts_(opts),
      pool_(opts.db_url),
      cache_(std::make_shared<UserStateCache>(static_cast<size_t>(opts.cache_users))),
      history_cache_(static_cast<size_t>(std::max<int64_t>(0, opts.cache_histories))),
      filters_(static_cast<size_t>(std::max<int64_t>(1, opts.cache_filters)),
               std::chrono::seconds(std::max<int64_t>(0, opts.attribute_refresh_s))),
      scorer_(rt.batcher_options("recommend"),
              [this](const std::string& key, std::vector<ScoreJob>& jobs) { return score_batch(key, jobs); }),
      prefills_queue_(static_cast<size_t>(std::max<int64_t>(1, opts.prefill_batch)), prefill_workers(opts),
                      [this](std::vector<PrefillJob>& jobs) { run_prefills(jobs); }),
      pool_work_(work_threads(opts)) {
  auto& m = rt_.metrics();
  const char* lookups = "Recommend calls by where the user's state came from (hit: the cache; miss: a store prefill)";
  cache_hits_ = &m.counter("mamba_rec_state_cache_total", lookups, {{"result", "hit"}});
  cache_misses_ = &m.counter("mamba_rec_state_cache_total", lookups, {{"result", "miss"}});
  const char* updates = "AddInteractions events applied to cached user states (advanced) or dropping them (dropped)";
  advanced_ = &m.counter("mamba_rec_state_updates_total", updates, {{"kind", "advanced"}});
  dropped_ = &m.counter("mamba_rec_state_updates_total", updates, {{"kind", "dropped"}});
  const char* hist = "RecommendFromHistory calls by where the window's state came from (hit: a cached window or prefix)";
  history_hits_ = &m.counter("mamba_rec_history_state_total", hist, {{"result", "hit"}});
  history_misses_ = &m.counter("mamba_rec_history_state_total", hist, {{"result", "miss"}});
  scoring_threads_ = std::max(1, omp_get_max_threads());
  prefills_ = &m.counter("mamba_rec_prefills_total", "cold states (Recommend misses, new RecommendFromHistory windows) prefilled");
  prefill_batches_ = &m.counter("mamba_rec_prefill_batches_total",
                                "batched prefills run (one store read and one forward per window length each)");
  rescored_ = &m.counter("mamba_rec_rescored_total",
                         "items rescored in f32 after the int8/bf16 scoring pass (candidates whose error bound reaches the k-th)");
  invalidated_ = &m.counter("mamba_rec_state_invalidations_total",
                            "cached user states dropped because another process changed their interactions");
  listener_ = std::make_unique<WriteListener>(
      opts_.db_url,
      WriteListener::Hooks{[this](int pid) { return pool_.owns_backend(pid); },
                           [this](const std::vector<std::string>& users) {
                             cache_->note_write();  // a prefill that read before the write is not cached
                             for (const auto& u : users) cache_->erase(u);
                             invalidated_->inc(users.size());
                           },
                           [this] {
                             cache_->note_write();
                             invalidated_->inc(cache_->size());
                             cache_->clear();
                           }});
  // The collector may outlive the service (the registry belongs to the runtime).
  m.add_collector([weak = std::weak_ptr<UserStateCache>(cache_)](sv::MetricsRegistry& r) {
    const auto cache = weak.lock();
    if (!cache) return;
    r.gauge("mamba_rec_state_cache_users", "users whose recurrent state is cached").set(static_cast<double>(cache->size()));
    r.gauge("mamba_rec_state_cache_evictions", "users evicted from the state cache (LRU)")
        .set(static_cast<double>(cache->evictions()));
  });
}

std::shared_ptr<const RecModel> RecommendationServiceImpl::model(const common::v1::ModelSelector& sel,
                                                                 sv::LoadedModelInfo* info) const {
  std::string name = sel.name();
  if (name.empty()) {
    std::set<std::string> names;
    for (const auto& m : repo_.list()) names.insert(m.name);
    if (names.size() > 1) sv::throw_invalid("model.name", "several models are loaded; name one");
    if (names.size() == 1) name = *names.begin();
    else throw sv::ServiceError(StatusCode::FAILED_PRECONDITION, "no model is loaded");
  }
  sv::check_model_name("model.name", name);
  sv::check_model_version("model.version", sel.version());
  return repo_.get(name, sel.version(), info);
}

std::vector<std::vector<ScoredId>> RecommendationServiceImpl::score_batch(const std::string& key,
                                                                         std::vector<ScoreJob>& jobs) {
  std::vector<Tensor> hidden;
  std::vector<int64_t> ks;
  std::vector<const std::unordered_set<int32_t>*> excl;
  std::vector<const AllowSet*> allow;
  bool any_allow = false;
  for (const auto& j : jobs) {
    hidden.push_back(j.hidden);
    ks.push_back(j.k);
    excl.push_back(&j.exclude);
    allow.push_back(j.allow.get());
    any_allow |= j.allow != nullptr;
  }
  if (!any_allow) allow.clear();
  const auto& model = jobs.front().model;
  // A batch of kSerialBatch requests or more means the calls keep the cores busy: the pass
  // runs on this thread alone (a team would take cores from gRPC and the prefills, and its
  // fork/join costs CPU; measured in NOTES.md). Smaller batches (light load, idle cores)
  // use the process's OpenMP threads for a lower latency.
  constexpr size_t kSerialBatch = 8;
  omp_set_num_threads(jobs.size() >= kSerialBatch ? 1 : scoring_threads_);
  if (opts_.scoring == "int8" || opts_.scoring == "bf16") {
    if (fast_tables_.size() > 8 && !fast_tables_.count(key)) fast_tables_.clear();  // old versions go
    FastEntry& e = fast_tables_[key];
    if (e.model != model) {
      e = {model, nullptr, nullptr};
      if (opts_.scoring == "int8") e.int8 = make_int8_item_table(*model->net, opts_.item_lanes_max_batch);
      if (!e.int8) e.bf16 = make_bf16_item_table(*model->net);  // int8 not possible: bf16, else f32
    }
    int64_t rescored = 0;
    std::vector<std::vector<ScoredId>> out;
    if (e.int8)
      out = top_k_items_batch_int8(*model->net, *e.int8, hidden, ks, excl, allow, &rescored);
    else if (e.bf16)
      out = top_k_items_batch_bf16(*model->net, *e.bf16, hidden, ks, excl, allow, &rescored);
    if (e.int8 || e.bf16) {
      rescored_->inc(static_cast<uint64_t>(rescored));
      return out;
    }
  }
  return top_k_items_batch(*model->net, hidden, ks, excl, allow);
}

void RecommendationServiceImpl::run_prefills(std::vector<PrefillJob>& jobs) {
  request_thread_kernels_single_threaded();
  prefill_batches_->inc();
  // Normally one model version; a hot swap may mix two: one pass per version.
  std::map<std::string, std::vector<PrefillJob*>> by_model;
  for (PrefillJob& j : jobs) by_model[j.model_key].push_back(&j);
  for (auto& [key, group] : by_model) {
    const RecModel& m = *group.front()->model;
    const size_t L = static_cast<size_t>(m.net->config().max_seq_len);
    std::vector<PrefillJob::Result> res(group.size());
    std::vector<std::exception_ptr> err(group.size());
    // The users' windows: one store query for all of them.
    std::vector<std::string> users;
    std::vector<size_t> user_job;
    for (size_t i = 0; i < group.size(); ++i) {
      if (group[i]->user.empty()) {
        res[i].window = std::move(group[i]->window);
      } else {
        users.push_back(group[i]->user);
        user_job.push_back(i);
      }
    }
    if (!users.empty()) {
      const uint64_t token = cache_->token();  // before the read: a write after it keeps these out of the cache
      try {
        const auto events = with_store([&] {
          auto conn = pool_.acquire();
          return last_interactions_batch(*conn, users, static_cast<int64_t>(L));
        });
        for (size_t u = 0; u < users.size(); ++u) {
          PrefillJob::Result& r = res[user_job[u]];
          r.token = token;
          if (!events[u]) {
            err[user_job[u]] = std::make_exception_ptr(
                sv::ServiceError(StatusCode::NOT_FOUND, "user '" + users[u] + "' is not known", "user_id"));
            continue;
          }
          // Newest first from the store: the known items oldest first, the last L kept.
          for (auto it = events[u]->rbegin(); it != events[u]->rend(); ++it) {
            const int32_t id = m.items.find(it->item_key);
            if (id > 0) r.window.push_back(id);
            r.last_ts = std::max(r.last_ts, it->ts);
          }
          if (r.window.size() > L) r.window.erase(r.window.begin(), r.window.end() - static_cast<std::ptrdiff_t>(L));
        }
      } catch (...) {
        for (size_t i : user_job) err[i] = std::current_exception();
      }
    }
    std::vector<const std::vector<int32_t>*> windows;
    std::vector<size_t> rows;
    for (size_t i = 0; i < group.size(); ++i)
      if (!err[i]) {
        windows.push_back(&res[i].window);
        rows.push_back(i);
      }
    try {
      std::vector<Mamba4RecState> states = m.net->prefill_batch(windows);
      for (size_t w = 0; w < rows.size(); ++w) res[rows[w]].state = std::move(states[w]);
      prefills_->inc(rows.size());
    } catch (...) {
      for (size_t i : rows) err[i] = std::current_exception();
    }
    for (size_t i = 0; i < group.size(); ++i) group[i]->done(err[i], err[i] ? nullptr : &res[i]);
  }
}

void RecommendationServiceImpl::score_and_finish(sv::AsyncCall& call, const std::string& key, ScoreJob job,
                                                 Answer answer, v1::RecommendResponse* resp) {
  sv::AsyncCall* c = &call;
  scorer_.submit_callback(key, std::move(job), call.deadline(), call.cancel_flag(),
                          [c, resp, a = std::move(answer)](std::exception_ptr e, std::vector<ScoredId>* top) {
                            if (e) return c->fail(e);
                            try {
                              fill_response(*a.model, a.info, *top, resp);
                              resp->set_from_cache(a.from_cache);
                              resp->set_history_length(a.history_length);
                            } catch (...) {
                              return c->fail(std::current_exception());  // the call must still end
                            }
                            c->finish();
                          });
}

// Work that may block (a store read, a prefill, a filter index load) runs on the pool:
// with may_block false (gRPC's thread) such a request is posted there and handled again.
void RecommendationServiceImpl::recommend_user(sv::AsyncCall& call, const v1::RecommendRequest* req,
                                               v1::RecommendResponse* resp, bool may_block) {
  request_thread_kernels_single_threaded();
  auto to_pool = [&] {
    sv::AsyncCall* c = &call;
    pool_work_.post([this, c, req, resp] {
      try {
        recommend_user(*c, req, resp, true);
      } catch (...) {
        c->fail(std::current_exception());
      }
    });
  };
  sv::check_range("k", req->k(), 1, 1000);
  if (req->user_id().empty()) sv::throw_invalid("user_id", "must not be empty");
  sv::check_limit("filters", static_cast<uint64_t>(req->filters_size()), static_cast<uint64_t>(opts_.max_filters), "filters");
  if (req->filters_size() > 0 && !may_block) return to_pool();
  sv::LoadedModelInfo info;
  const auto m = model(req->model(), &info);
  const std::string key = model_key(info);
  Tensor hidden;
  std::deque<int32_t> window;
  bool from_cache = false;
  const bool fresh_cache = listener_->listening();  // else the cache may be stale: not used
  if (auto e = fresh_cache ? cache_->find(req->user_id()) : nullptr) {
    std::lock_guard<std::mutex> lk(e->mu);
    if (e->model_key == key) {
      hidden = e->state.net.hidden.clone();
      window = e->state.window;
      from_cache = true;
    }
  }
  if (!from_cache && !may_block) return to_pool();
  std::shared_ptr<const AllowSet> allow;
  if (req->filters_size() > 0) {
    std::vector<AttributeFilter> fs;
    for (const auto& f : req->filters()) {
      AttributeFilter a;
      a.attribute = f.attribute();
      a.any_of.assign(f.any_of().begin(), f.any_of().end());
      if (f.has_min()) a.min = f.min();
      if (f.has_max()) a.max = f.max();
      fs.push_back(std::move(a));
    }
    try {
      allow = filters_.allow(key, fs, [&] {
        return with_store([&] {
          auto conn = pool_.acquire();
          return AttributeIndex::load(*conn, m->items);
        });
      });
    } catch (const FilterError& e) {
      sv::throw_invalid(e.field(), e.what());
    }
  }
  (from_cache ? cache_hits_ : cache_misses_)->inc();
  if (!from_cache) {
    // The user's state: read from the store and prefilled together with the other cold
    // calls queued meanwhile (PrefillQueue), then cached and scored.
    sv::AsyncCall* c = &call;
    PrefillJob job;
    job.model_key = key;
    job.model = m;
    job.user = req->user_id();
    job.done = [this, c, req, resp, m, info, key, allow, fresh_cache](std::exception_ptr e, PrefillJob::Result* r) {
      if (e) return c->fail(e);
      try {
        auto entry = std::make_shared<CachedUser>();
        entry->model_key = key;
        entry->model = m;
        entry->state.window.assign(r->window.begin(), r->window.end());
        entry->state.net = std::move(r->state);
        entry->state.last_ts = r->last_ts;
        ScoreJob sj{m, entry->state.net.hidden, req->k(), exclusions(*m, *req, r->window), allow};
        const auto length = static_cast<int64_t>(r->window.size());
        if (fresh_cache) cache_->insert(req->user_id(), std::move(entry), r->token);
        score_and_finish(*c, key, std::move(sj), {m, info, false, length}, resp);
      } catch (...) {
        c->fail(std::current_exception());
      }
    };
    prefills_queue_.submit(std::move(job));
    return;
  }
  ScoreJob job{m, hidden, req->k(), exclusions(*m, *req, window), allow};
  score_and_finish(call, key, std::move(job), {m, info, from_cache, static_cast<int64_t>(window.size())}, resp);
}

grpc::ServerUnaryReactor* RecommendationServiceImpl::Recommend(grpc::CallbackServerContext* ctx,
                                                               const v1::RecommendRequest* req,
                                                               v1::RecommendResponse* resp) {
  return rt_.handle_async(ctx, std::string(kName) + "/Recommend",
                          [&](sv::AsyncCall& call) { recommend_user(call, req, resp, false); });
}

void RecommendationServiceImpl::recommend_history(sv::AsyncCall& call, const v1::RecommendFromHistoryRequest* req,
                                                  v1::RecommendResponse* resp, bool may_block) {
  request_thread_kernels_single_threaded();
  sv::check_range("k", req->k(), 1, 1000);
  sv::check_limit("items", static_cast<uint64_t>(req->items_size()), static_cast<uint64_t>(opts_.max_history_items), "items");
  sv::LoadedModelInfo info;
  const auto m = model(req->model(), &info);
  std::vector<int32_t> history;
  for (int i = 0; i < req->items_size(); ++i) {
    const int32_t id = m->items.find(req->items(i));
    if (id == 0)
      throw sv::ServiceError(StatusCode::NOT_FOUND,
                             sv::indexed("items", static_cast<size_t>(i)) + ": item '" + req->items(i) +
                                 "' is not known to model " + model_key(info),
                             sv::indexed("items", static_cast<size_t>(i)));
    history.push_back(id);
  }
  const size_t L = static_cast<size_t>(m->net->config().max_seq_len);
  if (history.size() > L) history.erase(history.begin(), history.end() - static_cast<std::ptrdiff_t>(L));
  const std::string key = model_key(info);
  const size_t steps = static_cast<size_t>(std::max<int64_t>(0, opts_.history_steps));
  std::shared_ptr<const Mamba4RecState> state;
  bool from_cache = false;
  if (!may_block) {
    // Only the window itself cached answers here (that lookup is the answer: no second
    // one); a prefix to advance or a prefill goes to the pool.
    auto hit = history_cache_.longest_prefix(key, history, history.size());
    if (hit.state && hit.length == history.size()) {
      state = std::move(hit.state);
      from_cache = true;
    } else {
      sv::AsyncCall* c = &call;
      pool_work_.post([this, c, req, resp] {
        try {
          recommend_history(*c, req, resp, true);
        } catch (...) {
          c->fail(std::current_exception());
        }
      });
      return;
    }
  }
  if (!state) state = history_state(*m->net, key, history, &history_cache_, steps, &from_cache, /*prefill*/ false);
  (from_cache ? history_hits_ : history_misses_)->inc();
  if (!state) {
    // A window to prefill: batched with the other cold calls queued meanwhile.
    sv::AsyncCall* c = &call;
    PrefillJob job;
    job.model_key = key;
    job.model = m;
    job.window = history;
    job.done = [this, c, req, resp, m, info, key](std::exception_ptr e, PrefillJob::Result* r) {
      if (e) return c->fail(e);
      try {
        auto st = std::make_shared<const Mamba4RecState>(std::move(r->state));
        history_cache_.insert(key, r->window, st);
        ScoreJob sj{m, st->hidden, req->k(), exclusions(*m, *req, r->window), nullptr};
        score_and_finish(*c, key, std::move(sj), {m, info, false, static_cast<int64_t>(r->window.size())}, resp);
      } catch (...) {
        c->fail(std::current_exception());
      }
    };
    prefills_queue_.submit(std::move(job));
    return;
  }
  ScoreJob job{m, state->hidden, req->k(), exclusions(*m, *req, history), nullptr};
  score_and_finish(call, key, std::move(job), {m, info, from_cache, static_cast<int64_t>(history.size())}, resp);
}

grpc::ServerUnaryReactor* RecommendationServiceImpl::RecommendFromHistory(grpc::CallbackServerContext* ctx,
                                                                          const v1::RecommendFromHistoryRequest* req,
                                                                          v1::RecommendResponse* resp) {
  return rt_.handle_async(ctx, std::string(kName) + "/RecommendFromHistory",
                          [&](sv::AsyncCall& call) { recommend_history(call, req, resp, false); });
}

grpc::Status RecommendationServiceImpl::AddInteractions(grpc::ServerContext* ctx, const v1::AddInteractionsRequest* req,
                                                        v1::AddInteractionsResponse* resp) {
  return rt_.handle(ctx, std::string(kName) + "/AddInteractions", [&](sv::Call&) {
    request_thread_kernels_single_threaded();
    sv::check_limit("interactions", static_cast<uint64_t>(req->interactions_size()),
                    static_cast<uint64_t>(opts_.max_add_interactions), "interactions");
    std::vector<NewInteraction> events;
    for (int i = 0; i < req->interactions_size(); ++i) {
      const auto& x = req->interactions(i);
      const std::string f = sv::indexed("interactions", static_cast<size_t>(i));
      if (x.user_id().empty()) sv::throw_invalid(f + ".user_id", "must not be empty");
      if (x.item_id().empty()) sv::throw_invalid(f + ".item_id", "must not be empty");
      if (!std::isfinite(x.timestamp())) sv::throw_invalid(f + ".timestamp", "must be finite");
      NewInteraction n;
      n.user_key = x.user_id();
      n.item_key = x.item_id();
      n.ts = x.timestamp();
      if (!x.event_type().empty()) n.event_type = x.event_type();
      n.weight = x.weight() == 0.f ? 1.f : x.weight();
      events.push_back(std::move(n));
    }
    std::lock_guard<std::mutex> wl(write_mu_);
    const AddResult r = with_store([&] {
      auto conn = pool_.acquire();
      return add_interactions(*conn, events);
    });
    cache_->note_write();
    resp->set_inserted(r.inserted);
    resp->set_duplicates(r.duplicates);
    resp->set_new_users(r.new_users);
    // Advance the cached states, in the request's (= the store's insertion) order.
    for (const NewInteraction& n : events) {
      auto e = cache_->find(n.user_key);
      if (!e) continue;
      std::lock_guard<std::mutex> lk(e->mu);
      const RecModel* m = e->model.get();
      const int32_t id = m ? m->items.find(n.item_key) : 0;
      // Which events were duplicates is not known: drop the users of such a call.
      if (r.duplicates > 0 || id == 0 || n.ts < e->state.last_ts) {
        cache_->erase(n.user_key);
        dropped_->inc();
        continue;
      }
      advance_user_state(*m->net, e->state, id, n.ts);
      advanced_->inc();
    }
  });
}

grpc::Status RecommendationServiceImpl::ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest*,
                                                   v1::ListModelsResponse* resp) {
  return rt_.handle(ctx, std::string(kName) + "/ListModels", [&](sv::Call&) {
    for (const auto& m : repo_.list()) sv::model_info_to_proto(m, resp->add_models());
  });
}

grpc::Status RecommendationServiceImpl::GetModel(grpc::ServerContext* ctx, const v1::GetModelRequest* req,
                                                 common::v1::ModelInfo* resp) {
  return rt_.handle(ctx, std::string(kName) + "/GetModel", [&](sv::Call&) {
    sv::check_model_name("model.name", req->model().name());
    sv::check_model_version("model.version", req->model().version());
    sv::model_info_to_proto(repo_.info(req->model().name(), req->model().version()), resp);
  });
}

grpc::Status RecommendationServiceImpl::ListItems(grpc::ServerContext* ctx, const v1::ListItemsRequest* req,
                                                  v1::ListItemsResponse* resp) {
  return rt_.handle(ctx, std::string(kName) + "/ListItems", [&](sv::Call&) {
    sv::check_range("limit", req->limit(), 1, 100000);
    if (req->offset() < 0) sv::throw_invalid("offset", "must be >= 0");
    sv::LoadedModelInfo info;
    const auto m = model(req->model(), &info);
    const int64_t n = m->items.num_items();
    resp->set_total(n);
    resp->set_model_name(info.name);
    resp->set_model_version(info.version);
    const int64_t end = req->offset() >= n ? 0 : std::min<int64_t>(n, req->offset() + req->limit());
    for (int64_t i = req->offset(); i < end; ++i) resp->add_item_ids(m->items.key(static_cast<int32_t>(i + 1)));
  });
}

int run_server(sv::ServerOptions opts, const RecServiceOptions& rec) {
  sv::finalize_server_options(opts);
  sv::init_json_logging(opts.log_level);
  if (opts.model_root.empty()) throw Error("--model-root is required (or MAMBA_MODEL_ROOT)");
  if (rec.db_url.empty()) throw Error("--db is required (or MAMBA_DB_URL)");
  {
    // Fail fast on a bad URL; the schema (migration 4's write notifications included) is
    // brought up to date, as `ingest` does.
    auto conn = connect(rec.db_url);
    apply_migrations(conn);
  }
  sv::Runtime rt(opts);
  sv::RepositoryOptions ro;
  ro.poll_seconds = opts.poll_seconds;
  ro.metrics = &rt.metrics();
  sv::ModelRepository<RecModel> repo(
      opts.model_root,
      [](const std::filesystem::path& dir) { return std::make_shared<const RecModel>(RecModel::load(dir.string())); }, ro);
  rt.serve_health_from(repo, RecommendationServiceImpl::kName);
  repo.start();
  RecommendationServiceImpl service(rt, repo, rec);
  sv::log_event(spdlog::level::info, "recommendation service starting",
                {{"model_root", opts.model_root}, {"cache_users", rec.cache_users}});
  const int rc = rt.run({&service});
  repo.stop();
  return rc;
}

}  // namespace mamba::recommendation
