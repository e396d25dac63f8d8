// A generated interaction log with a sequential pattern that a first-order Markov chain
// cannot fully capture (for tests, demos and figures).
//
// Items are laid on a cycle in a random order pi (pi[0..num_items-1]). Each user has a
// stride s drawn uniformly from 1..max_stride and a random start position p; event t is
// the item at position p + t * s (mod num_items), except that with probability `noise` it
// is a uniformly random item (the walk goes on from where it was). Knowing the last item
// leaves max_stride equally likely successors; knowing the last TWO items gives the stride
// and so the next item. Timestamps are 1, 2, ... per user; rows come user by user.
// With cover_all, every item appears at least once (a catalogue of exactly num_items, for
// catalogue-scale figures): the items no walk reached, in cycle order, are given to extra
// users u<users+1>, ... as stride-1 walks of up to events_per_user events (the last one
// shorter; a walk of one event is padded by its successor on the cycle).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mamba/recommendation/interactions_file.h"

namespace mamba::recommendation {

struct StrideWalkOptions {
  int64_t users = 200;
  int64_t events_per_user = 20;
  int64_t num_items = 100;
  int64_t max_stride = 3;
  double noise = 0.05;
  uint64_t seed = 1;
  bool cover_all = false;
};

std::vector<InteractionRow> generate_stride_walks(const StrideWalkOptions& o);
// The same rows as a RecBole .inter text (user_id:token item_id:token timestamp:float).
std::string to_recbole_inter(const std::vector<InteractionRow>& rows);

}  // namespace mamba::recommendation
