// The recommendation gRPC service (mamba.recommendation.v1.RecommendationService) on the
// shared serving runtime: Mamba4Rec model directories (model_dir.h) from a versioned
// repository, the event store (store.h) on PostgreSQL, and the per-user recurrent states
// in a UserStateCache (serving.h, which also defines the serving semantics: the model
// scores the user's newest max_seq_len events).
//
// Recommend: the user's cached state when it belongs to the requested model version (and
// the store's write listener is connected: see WriteListener for the freshness rule), else
// a prefill from the store's newest max_seq_len events (cached afterwards); scores = h E^T
// over the catalogue through the scoring batcher (--scoring int8|bf16|f32: an AMX pass and
// an exact f32 rescoring, bf16_scoring.h, or the f32 pass; the same answers), top-k.
// Recommend and RecommendFromHistory are gRPC callback methods (Runtime::handle_async): a
// cached state goes from gRPC's thread straight to the batcher, whose worker fills the
// response and finishes the call; store reads and prefills run on a WorkPool.
// RecommendFromHistory: the same over an explicit list of item keys; the state of its window
// (the last max_seq_len ids) comes from a HistoryStateCache (serving.h) when that window, or
// a prefix of it at most --history-steps events shorter, was seen before (--cache-histories
// windows, LRU), else from a prefill; from_cache tells which.
// ListItems: a page of the model's item keys (offset, limit 1..100000), in dense id order.
// AddInteractions: store.h's add_interactions (one transaction), then the cached states of
// those users are advanced by the new events (O(1) each while the window fills); a cached
// user whose write had duplicates, an out-of-order timestamp or an item the model does not
// know is dropped from the cache instead (the next Recommend prefills it from the store).
// Writes are serialised among themselves (store commit + cache update under one mutex), so
// the cache applies them in commit order.
// The model selector's name may be empty when exactly one model name is loaded.
// Status codes: INVALID_ARGUMENT (k outside 1..1000, empty user id, bad model name, bad
// event), NOT_FOUND (unknown user, item, model or version; names the id),
// FAILED_PRECONDITION (no model loaded), RESOURCE_EXHAUSTED (over --max-history-items /
// --max-add-interactions), UNAVAILABLE (the database is unreachable, draining),
// UNAUTHENTICATED, DEADLINE_EXCEEDED, CANCELLED.
// Metrics (besides the runtime's): mamba_rec_state_cache_total{result=hit|miss},
// mamba_rec_state_updates_total{kind=advanced|dropped}, mamba_rec_state_cache_users,
// mamba_rec_state_cache_evictions, mamba_rec_history_state_total{result=hit|miss}.
// Thread-safety: the service is shared by gRPC's threads; the cache and the connection
// pool are thread-safe, a connection is used by one call at a time.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <thread>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "mamba/recommendation/bf16_scoring.h"
#include "mamba/recommendation/item_attributes.h"
#include "mamba/recommendation/model_dir.h"
#include "mamba/recommendation/serving.h"
#include "mamba/recommendation/v1/recommendation.grpc.pb.h"
#include "mamba/serve/model_repository.h"
#include "mamba/serve/batcher.h"
#include "mamba/serve/runtime.h"

namespace mamba::recommendation {

struct RecServiceOptions {
  std::string db_url;
  int64_t cache_users = 100000;         // users whose state is kept (LRU)
  int64_t cache_histories = 4096;       // RecommendFromHistory window states kept (LRU; 0: none)
  int64_t history_steps = 16;           // a cached prefix is advanced by at most this many events
  int64_t max_history_items = 10000;    // items per RecommendFromHistory
  int64_t max_add_interactions = 10000; // events per AddInteractions
  int64_t attribute_refresh_s = 60;     // a model's attribute index is re-read after this long
  int64_t cache_filters = 256;          // allow sets kept (LRU) per distinct filter list
  int64_t max_filters = 64;             // filters per Recommend
  int64_t work_threads = 0;             // WorkPool threads (cache misses); 0: 2 x the cores, at least 4
  int64_t prefill_batch = 32;           // cold states prefilled together (PrefillQueue); 1: one by one
  int64_t prefill_workers = 0;          // batched prefills running at once; 0: one per core
  std::string scoring = "int8";         // int8 / bf16: bf16_scoring.h where AMX runs (same answers); f32
  int64_t item_lanes_max_batch = kItemLanesMaxBatch;  // VNNI int8: batches up to this size put items in the lanes
};

// A few connections to the store, each used by one call at a time. It knows the backend
// process ids of its open connections (the notifications of the service's own writes carry
// them).
class ConnectionPool {
 public:
  explicit ConnectionPool(std::string url) : url_(std::move(url)) {}
  class Lease {
   public:
    Lease(ConnectionPool& p, std::unique_ptr<pqxx::connection> c, int pid)
        : pool_(p), conn_(std::move(c)), pid_(pid) {}
    ~Lease();
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    pqxx::connection& operator*() { return *conn_; }

   private:
    ConnectionPool& pool_;
    std::unique_ptr<pqxx::connection> conn_;
    int pid_;
  };
  Lease acquire();  // an idle connection or a new one (throws StoreError when it cannot)
  bool owns_backend(int pid) const;  // one of this pool's connections (idle or leased)

 private:
  const std::string url_;
  mutable std::mutex mu_;
  std::vector<std::pair<std::unique_ptr<pqxx::connection>, int>> idle_;
  std::set<int> pids_;
};

// The freshness rule of the cached user states. The service applies its own writes
// (AddInteractions) to the cache itself. Writes that other processes commit (`mamba-rec
// ingest`, another server, plain SQL) reach it through PostgreSQL: migration 4's triggers
// NOTIFY channel mamba_rec_interactions at commit with the users whose interactions changed
// (or '*'), and this listener (its own connection, LISTEN) drops those users' states, so
// their next Recommend reads the store again. Notifications sent by the pool's own
// backends are skipped (their writes are in the cache already).
// So a Recommend that starts after a write's notification has reached the server answers
// as a recompute over the store would; between the commit and the notification's arrival
// (a loopback round trip, normally well under a millisecond; the test measures it) a cached
// answer may still be the one from before that write. While the listener is not connected
// (start-up, a lost connection, reconnecting every second) the cache is not used at all:
// every Recommend reads the store; on each (re)connection the whole cache is dropped
// first, as notifications may have been missed. Thread-safety: listening() from any thread.
class WriteListener {
 public:
  struct Hooks {
    std::function<bool(int)> own_backend;                       // skip notifications from it
    std::function<void(const std::vector<std::string>&)> drop;  // these users
    std::function<void()> drop_all;
  };
  // Starts the thread and waits (up to 5 s) for the first connection attempt.
  WriteListener(std::string url, Hooks hooks);
  ~WriteListener();
  WriteListener(const WriteListener&) = delete;
  WriteListener& operator=(const WriteListener&) = delete;
  bool listening() const { return listening_.load(std::memory_order_acquire); }
  uint64_t notifications() const { return notifications_.load(); }  // applied (not own)

  void on_notification(const std::string& payload, int pid);  // the receiver's callback

 private:
  void run();
  const std::string url_;
  Hooks hooks_;
  std::atomic<bool> listening_{false}, stop_{false};
  std::atomic<uint64_t> notifications_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool tried_ = false;
  std::thread thread_;
};

// One top-k request for the scoring batcher: concurrent Recommend / RecommendFromHistory
// calls for one model version are scored together by one GEMM against the item table.
struct ScoreJob {
  std::shared_ptr<const RecModel> model;
  Tensor hidden;  // (d_model)
  int64_t k = 10;
  std::unordered_set<int32_t> exclude;
  std::shared_ptr<const AllowSet> allow;  // null: no filter
};

// Recommend filters: per model version the attribute index (item_attributes.h), read from
// the store on the first filtered call and again once older than attribute_refresh_s; the
// allow set of each distinct filter list, LRU. Thread-safety: any thread.
class FilterCache {
 public:
  FilterCache(size_t capacity, std::chrono::seconds refresh) : capacity_(std::max<size_t>(1, capacity)), refresh_(refresh) {}
  // `load` reads the index when needed. Throws FilterError for a bad filter.
  std::shared_ptr<const AllowSet> allow(const std::string& model_key, const std::vector<AttributeFilter>& filters,
                                        const std::function<AttributeIndex()>& load);

 private:
  struct Index {
    std::shared_ptr<const AttributeIndex> index;
    std::chrono::steady_clock::time_point loaded;
    uint64_t generation = 0;
  };
  const size_t capacity_;
  const std::chrono::seconds refresh_;
  std::mutex mu_;
  std::mutex load_mu_;  // one load at a time
  std::map<std::string, Index> indexes_;
  uint64_t generations_ = 0;
  using List = std::list<std::pair<std::string, std::shared_ptr<const AllowSet>>>;
  List lru_;
  std::unordered_map<std::string, List::iterator> sets_;
};

// A fixed set of threads running posted tasks in order (the callback handlers' slow work:
// store reads and prefills). Tasks must not throw. Thread-safety: post() from any thread.
class WorkPool {
 public:
  explicit WorkPool(int threads);
  ~WorkPool();  // runs the tasks already posted, then joins
  WorkPool(const WorkPool&) = delete;
  WorkPool& operator=(const WorkPool&) = delete;
  void post(std::function<void()> task);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

// Recommend and RecommendFromHistory use gRPC's callback API (no thread waits per call:
// the handler runs on gRPC's thread, a cached state goes straight to the scoring batcher,
// whose worker finishes the call; a cache miss is prefilled on the WorkPool first); the
// other methods are synchronous.
using RecommendationAsyncBase = v1::RecommendationService::WithCallbackMethod_Recommend<
    v1::RecommendationService::WithCallbackMethod_RecommendFromHistory<v1::RecommendationService::Service>>;

class RecommendationServiceImpl final : public RecommendationAsyncBase {
 public:
  RecommendationServiceImpl(serve::Runtime& rt, serve::ModelRepository<RecModel>& repo, RecServiceOptions opts);

  grpc::ServerUnaryReactor* Recommend(grpc::CallbackServerContext* ctx, const v1::RecommendRequest* req,
                                      v1::RecommendResponse* resp) override;
  grpc::ServerUnaryReactor* RecommendFromHistory(grpc::CallbackServerContext* ctx,
                                                 const v1::RecommendFromHistoryRequest* req,
                                                 v1::RecommendResponse* resp) override;
  grpc::Status AddInteractions(grpc::ServerContext* ctx, const v1::AddInteractionsRequest* req,
                               v1::AddInteractionsResponse* resp) override;
  grpc::Status ListModels(grpc::ServerContext* ctx, const v1::ListModelsRequest* req,
                          v1::ListModelsResponse* resp) override;
  grpc::Status GetModel(grpc::ServerContext* ctx, const v1::GetModelRequest* req, common::v1::ModelInfo* resp) override;
  grpc::Status ListItems(grpc::ServerContext* ctx, const v1::ListItemsRequest* req, v1::ListItemsResponse* resp) override;

  static constexpr const char* kName = "mamba.recommendation.v1.RecommendationService";
  UserStateCache& cache() { return *cache_; }

 private:
  std::shared_ptr<const RecModel> model(const common::v1::ModelSelector& sel, serve::LoadedModelInfo* info) const;

  serve::Runtime& rt_;
  serve::ModelRepository<RecModel>& repo_;
  RecServiceOptions opts_;
  ConnectionPool pool_;
  std::shared_ptr<UserStateCache> cache_;  // shared with the metrics collector (weakly)
  HistoryStateCache history_cache_;        // RecommendFromHistory's window states
  FilterCache filters_;                    // Recommend filters
  std::mutex write_mu_;  // AddInteractions: store commit + cache update, in commit order
  serve::Counter* invalidated_ = nullptr;  // mamba_rec_state_invalidations_total: users dropped by notifications
  std::unique_ptr<WriteListener> listener_;  // writes by other processes (after cache_, pool_)
  serve::Counter* cache_hits_ = nullptr;    // mamba_rec_state_cache_total{result="hit"}
  serve::Counter* cache_misses_ = nullptr;  // {result="miss"}: prefilled from the store
  serve::Counter* advanced_ = nullptr;      // mamba_rec_state_updates_total{kind="advanced"}
  serve::Counter* dropped_ = nullptr;       // {kind="dropped"}: re-prefilled on the next call
  serve::Counter* history_hits_ = nullptr;    // mamba_rec_history_state_total{result="hit"}
  serve::Counter* history_misses_ = nullptr;  // {result="miss"}: a prefill of the window
  serve::Counter* rescored_ = nullptr;        // mamba_rec_rescored_total: candidates rescored in f32
  serve::Counter* prefills_ = nullptr;        // mamba_rec_prefills_total: cold windows prefilled
  serve::Counter* prefill_batches_ = nullptr; // mamba_rec_prefill_batches_total: batched prefills (store reads)
  // The int8 / bf16 item table per model key, used by the scoring batcher's worker only;
  // rebuilt when the key's model object changes. Both null: f32 (no AMX, a non-finite table).
  struct FastEntry {
    std::shared_ptr<const RecModel> model;
    std::shared_ptr<const Int8ItemTable> int8;
    std::shared_ptr<const Bf16ItemTable> bf16;
  };
  std::map<std::string, FastEntry> fast_tables_;
  int scoring_threads_ = 1;  // OMP_NUM_THREADS at start: small batches' scoring team
  std::vector<std::vector<ScoredId>> score_batch(const std::string& key, std::vector<ScoreJob>& jobs);
  // Declared last: stopped (and its worker joined) before the members it uses go; the pool
  // first (its tasks submit to the batcher).
  serve::DynamicBatcher<ScoreJob, std::vector<ScoredId>> scorer_;
  PrefillQueue prefills_queue_;  // runs on the pool's threads (its jobs submit to the scorer)
  void run_prefills(std::vector<PrefillJob>& jobs);
  WorkPool pool_work_;

  // Queues `job` on the scoring batcher; its worker fills `resp` and finishes `call`.
  struct Answer {
    std::shared_ptr<const RecModel> model;
    serve::LoadedModelInfo info;
    bool from_cache = false;
    int64_t history_length = 0;
  };
  void score_and_finish(serve::AsyncCall& call, const std::string& key, ScoreJob job, Answer answer,
                        v1::RecommendResponse* resp);
  // Recommend after the checks: the user's state (cache or prefill), then scoring.
  void recommend_user(serve::AsyncCall& call, const v1::RecommendRequest* req, v1::RecommendResponse* resp,
                      bool may_block);
  void recommend_history(serve::AsyncCall& call, const v1::RecommendFromHistoryRequest* req,
                         v1::RecommendResponse* resp, bool may_block);
};

// `mamba-rec serve`: the server main (flags already parsed).
int run_server(serve::ServerOptions opts, const RecServiceOptions& rec);

}  // namespace mamba::recommendation
