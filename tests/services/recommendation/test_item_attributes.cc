// Item attributes against a real PostgreSQL: a RecBole .item file (typed columns, malformed
// rows reported by line, idempotent re-ingest, strict, a type conflict refused), the
// attribute index's allow sets against a plain evaluation of the filters, bad filters
// naming their field, and filtered top-k equal to the unfiltered ranking restricted to the
// allowed items (one request and a batch with a different filter per request).
#include "mamba/recommendation/item_attributes.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "mamba/recommendation/migrations.h"
#include "mamba/recommendation/serving.h"
#include "mamba/recommendation/store.h"
#include "pg_fixture.h"

using namespace mamba::recommendation;
using mamba::recommendation::testing::MigratedPgTest;
using mamba::Tensor;

namespace {

constexpr int kItems = 300;

// What the generated file says about item i (1..kItems): the plain reference.
struct Attrs {
  std::string brand;                 // "" = absent
  std::set<std::string> categories;  // empty = absent
  double price = NAN;                // NaN = absent
};

std::vector<Attrs> make_attrs() {
  std::mt19937 rng(3);
  std::vector<Attrs> a(kItems + 1);
  for (int i = 1; i <= kItems; ++i) {
    if (i % 7 != 0) a[i].brand = "b" + std::to_string(rng() % 5);
    const int nc = static_cast<int>(rng() % 3);
    for (int c = 0; c < nc; ++c) a[i].categories.insert("c" + std::to_string(rng() % 6));
    if (i % 11 != 0) a[i].price = static_cast<double>(rng() % 10000) / 100.0;
  }
  return a;
}

// The file: columns in an unusual order, a float_seq column (ignored), malformed rows at
// known lines. `bad_lines` receives the line numbers of the rejected rows.
std::string item_file(const std::vector<Attrs>& a, std::vector<int64_t>* bad_lines) {
  std::ostringstream os;
  os << "price:float\titem_id:token\tcategories:token_seq\tvec:float_seq\tbrand:token\n";
  int64_t line = 1;
  for (int i = 1; i <= kItems; ++i) {
    char price[32] = "";
    if (!std::isnan(a[i].price)) std::snprintf(price, sizeof price, "%.2f", a[i].price);
    std::string cats;
    for (const auto& c : a[i].categories) cats += (cats.empty() ? "" : " ") + c;
    os << price << "\titem" << i << "\t" << cats << "\t1 2\t" << a[i].brand << "\n";
    ++line;
    if (i == 10) {
      os << "abc\titem_bad1\tc1\t\tb1\n";  // bad number
      bad_lines->push_back(++line);
    }
    if (i == 20) {
      os << "1.5\titem_bad2\tc1\n";  // too few columns
      bad_lines->push_back(++line);
    }
    if (i == 30) {
      os << "2.5\titem5\tc1\t\tb1\n";  // item5 again
      bad_lines->push_back(++line);
    }
  }
  return os.str();
}

ItemVocab vocab() {
  std::vector<std::string> keys{""};
  for (int i = 1; i <= kItems; ++i) keys.push_back("item" + std::to_string(i));
  return ItemVocab(keys);
}

class ItemAttributes : public MigratedPgTest {
 protected:
  ItemAttributes() : MigratedPgTest("items") {}
};

std::vector<int32_t> ids_of(const AllowSet& s) {
  std::vector<int32_t> out;
  for (int32_t i = 0; i <= kItems + 70; ++i)
    if (s.allowed(i)) out.push_back(i);
  return out;
}

}  // namespace

TEST_F(ItemAttributes, IngestReportsBadRowsAndIsIdempotent) {
  const auto a = make_attrs();
  std::vector<int64_t> bad;
  const auto path = write_file("gen.item", item_file(a, &bad));
  {
    // strict: nothing written
    const auto r = ingest_item_file(conn(), path, true);
    EXPECT_FALSE(r.written);
    EXPECT_EQ(r.rejected, 3);
    pqxx::read_transaction tx(conn());
    EXPECT_EQ(tx.exec1("SELECT count(*) FROM items")[0].as<int>(), 0);
  }
  const auto r = ingest_item_file(conn(), path);
  EXPECT_TRUE(r.written);
  EXPECT_EQ(r.rows_read, kItems + 3);
  EXPECT_EQ(r.rows_good, kItems);
  EXPECT_EQ(r.new_items, kItems);
  EXPECT_EQ(r.updated, 0);
  ASSERT_EQ(r.rejected, 3);
  ASSERT_EQ(r.rejected_rows.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(r.rejected_rows[i].line, bad[i]) << r.rejected_rows[i].reason;
  EXPECT_NE(r.rejected_rows[0].reason.find("bad number in column 'price'"), std::string::npos) << r.rejected_rows[0].reason;
  EXPECT_NE(r.rejected_rows[1].reason.find("3 columns"), std::string::npos) << r.rejected_rows[1].reason;
  EXPECT_NE(r.rejected_rows[2].reason.find("item 'item5' repeated"), std::string::npos) << r.rejected_rows[2].reason;
  EXPECT_EQ(r.ignored_columns, (std::vector<std::string>{"vec:float_seq"}));
  const auto report = format_item_report(r);
  EXPECT_NE(report.find("line " + std::to_string(bad[0]) + ": bad number"), std::string::npos) << report;
  {
    pqxx::read_transaction tx(conn());
    const auto j = tx.exec1("SELECT attributes::text FROM items WHERE external_key = 'item1'")[0].as<std::string>();
    EXPECT_NE(j.find("\"brand\""), std::string::npos) << j;
    EXPECT_EQ(tx.exec1("SELECT count(*) FROM item_attribute_types")[0].as<int>(), 3);
  }
  // Again: nothing changes.
  const auto again = ingest_item_file(conn(), path);
  EXPECT_EQ(again.new_items, 0);
  EXPECT_EQ(again.updated, 0);
  EXPECT_EQ(again.unchanged, kItems);
  // A change to one item's brand: one update, the other attributes kept (merge).
  const auto p2 = write_file("one.item", "item_id:token\tbrand:token\nitem1\tzz\nitem_new\tb1\n");
  const auto r2 = ingest_item_file(conn(), p2);
  EXPECT_EQ(r2.updated, 1);
  EXPECT_EQ(r2.new_items, 1);
  {
    pqxx::read_transaction tx(conn());
    EXPECT_EQ(tx.exec1("SELECT attributes->>'brand' FROM items WHERE external_key = 'item1'")[0].as<std::string>(), "zz");
    EXPECT_EQ(tx.exec1("SELECT attributes ? 'price' FROM items WHERE external_key = 'item1'")[0].as<bool>(),
              !std::isnan(a[1].price));
  }
  // brand as a float: refused whole, nothing written.
  const auto p3 = write_file("conflict.item", "item_id:token\tbrand:float\nitem_x\t1\n");
  try {
    ingest_item_file(conn(), p3);
    ADD_FAILURE() << "a type conflict was accepted";
  } catch (const StoreError& e) {
    EXPECT_NE(std::string(e.what()).find("attribute 'brand' is stored as token"), std::string::npos) << e.what();
  }
  pqxx::read_transaction tx(conn());
  EXPECT_EQ(tx.exec1("SELECT count(*) FROM items WHERE external_key = 'item_x'")[0].as<int>(), 0);
}

TEST_F(ItemAttributes, BadHeaderThrowsNamingTheColumn) {
  for (const std::string& text : {std::string("brand:token\nb\n"), std::string("item_id:token\tx:json\nitem1\t{}\n"),
                                  std::string("item_id:token\tbrand\nitem1\tb\n")}) {
    const auto p = write_file("bad.item", text);
    EXPECT_THROW(ingest_item_file(conn(), p), InteractionFileError) << text;
  }
  const auto p = write_file("bad.item", "item_id:token\tx:json\nitem1\t{}\n");
  try {
    ingest_item_file(conn(), p);
  } catch (const InteractionFileError& e) {
    EXPECT_NE(std::string(e.what()).find("column 'x' has type 'json'"), std::string::npos) << e.what();
  }
}

TEST_F(ItemAttributes, AllowSetsMatchAPlainEvaluation) {
  const auto a = make_attrs();
  std::vector<int64_t> bad;
  ingest_item_file(conn(), write_file("gen.item", item_file(a, &bad)));
  const AttributeIndex idx = AttributeIndex::load(conn(), vocab());
  EXPECT_EQ(idx.type("brand"), AttrType::token);
  EXPECT_EQ(idx.type("categories"), AttrType::token_seq);
  EXPECT_EQ(idx.type("price"), AttrType::float_);
  EXPECT_FALSE(idx.type("vec"));

  struct Case {
    std::vector<AttributeFilter> filters;
    std::function<bool(const Attrs&)> pass;
  };
  const std::vector<Case> cases = {
      {{}, [](const Attrs&) { return true; }},
      {{{"brand", {"b2"}, {}, {}}}, [](const Attrs& x) { return x.brand == "b2"; }},
      {{{"brand", {"b0", "b3", "nope"}, {}, {}}}, [](const Attrs& x) { return x.brand == "b0" || x.brand == "b3"; }},
      {{{"categories", {"c1", "c4"}, {}, {}}}, [](const Attrs& x) { return x.categories.count("c1") || x.categories.count("c4"); }},
      {{{"price", {}, 10.0, 40.5}}, [](const Attrs& x) { return x.price >= 10.0 && x.price <= 40.5; }},
      {{{"price", {}, {}, 20.0}}, [](const Attrs& x) { return x.price <= 20.0; }},
      {{{"price", {}, 80.0, {}}, {"brand", {"b1"}, {}, {}}}, [](const Attrs& x) { return x.price >= 80.0 && x.brand == "b1"; }},
      {{{"brand", {"b1", "b4"}, {}, {}}, {"categories", {"c0"}, {}, {}}, {"price", {}, 5.0, 60.0}},
       [](const Attrs& x) { return (x.brand == "b1" || x.brand == "b4") && x.categories.count("c0") && x.price >= 5.0 && x.price <= 60.0; }},
      {{{"brand", {"none-such"}, {}, {}}}, [](const Attrs&) { return false; }},
  };
  for (size_t c = 0; c < cases.size(); ++c) {
    std::vector<int32_t> want;
    for (int32_t i = 1; i <= kItems; ++i)
      if (cases[c].pass(a[static_cast<size_t>(i)])) want.push_back(i);
    const AllowSet s = idx.allow(cases[c].filters);
    EXPECT_EQ(ids_of(s), want) << "case " << c;
    EXPECT_EQ(s.count, static_cast<int64_t>(want.size())) << "case " << c;
    // The filter must select something in the interesting cases (the data is not degenerate).
    if (c > 0 && c + 1 < cases.size()) {
      EXPECT_GT(want.size(), 0u) << "case " << c;
      EXPECT_LT(want.size(), static_cast<size_t>(kItems)) << "case " << c;
    }
  }
  // Order and repeats do not change the canonical key.
  EXPECT_EQ(AttributeIndex::canonical({{"brand", {"b1", "b0", "b1"}, {}, {}}, {"price", {}, 1.0, {}}}),
            AttributeIndex::canonical({{"price", {}, 1.0, {}}, {"brand", {"b0", "b1"}, {}, {}}}));
  EXPECT_NE(AttributeIndex::canonical({{"price", {}, 1.0, {}}}), AttributeIndex::canonical({{"price", {}, {}, 1.0}}));

  // Bad filters name their field.
  auto field_of = [&](const std::vector<AttributeFilter>& f) -> std::string {
    try {
      idx.allow(f);
    } catch (const FilterError& e) {
      return e.field() + ": " + e.what();
    }
    return "accepted";
  };
  EXPECT_NE(field_of({{"brand", {"b1"}, {}, {}}, {"colour", {"red"}, {}, {}}}).find("filters[1].attribute: unknown attribute 'colour'"),
            std::string::npos);
  EXPECT_EQ(field_of({{"price", {"1"}, {}, {}}}).rfind("filters[0].any_of:", 0), 0u);
  EXPECT_EQ(field_of({{"price", {}, {}, {}}}).rfind("filters[0].min:", 0), 0u);
  EXPECT_EQ(field_of({{"price", {}, 5.0, 1.0}}).rfind("filters[0].min: min 5", 0), 0u);
  EXPECT_EQ(field_of({{"brand", {}, 1.0, {}}}).rfind("filters[0].min:", 0), 0u);
  EXPECT_EQ(field_of({{"brand", {}, {}, {}}}).rfind("filters[0].any_of:", 0), 0u);
}

TEST_F(ItemAttributes, FilteredTopKIsTheUnfilteredRankingRestricted) {
  const auto a = make_attrs();
  std::vector<int64_t> bad;
  ingest_item_file(conn(), write_file("gen.item", item_file(a, &bad)));
  const AttributeIndex idx = AttributeIndex::load(conn(), vocab());
  Mamba4RecConfig cfg;
  cfg.num_items = kItems;
  cfg.d_model = 16;
  cfg.n_layers = 1;
  cfg.d_state = 8;
  cfg.max_seq_len = 10;
  const Mamba4Rec net(cfg, 5);
  const std::vector<std::vector<AttributeFilter>> filters = {
      {{"brand", {"b2"}, {}, {}}},
      {{"categories", {"c1", "c4"}, {}, {}}},
      {{"price", {}, 10.0, 40.5}},
      {{"brand", {"b1", "b4"}, {}, {}}, {"price", {}, 5.0, 60.0}},
      {{"brand", {"b3"}, {}, {}}, {"price", {}, {}, 30.0}},  // few items: the sparse path
      {{"categories", {"c2"}, {}, {}}, {"price", {}, 50.0, 60.0}},
      {{"brand", {"none-such"}, {}, {}}},
  };
  std::mt19937 rng(9);
  std::vector<Tensor> hidden;
  std::vector<int64_t> ks;
  std::vector<std::unordered_set<int32_t>> ex(20);
  std::vector<const std::unordered_set<int32_t>*> exp;
  std::vector<AllowSet> sets;
  for (const auto& f : filters) sets.push_back(idx.allow(f));
  std::vector<const AllowSet*> allow;
  for (int b = 0; b < 20; ++b) {
    std::vector<int32_t> h;
    for (int t = 0; t < 6; ++t) h.push_back(1 + static_cast<int32_t>(rng() % kItems));
    hidden.push_back(net.prefill(h).hidden);
    ks.push_back(b % 3 == 0 ? 1000 : 10);
    if (b % 4 == 1) ex[static_cast<size_t>(b)] = {h.begin(), h.end()};
    exp.push_back(&ex[static_cast<size_t>(b)]);
    allow.push_back(b % 6 == 5 ? nullptr : &sets[static_cast<size_t>(b) % sets.size()]);
  }
  const auto batch = top_k_items_batch(net, hidden, ks, exp, allow);
  ASSERT_EQ(batch.size(), 20u);
  // The same batch unfiltered, every item ranked (the same kernel: the same rounding).
  const std::vector<int64_t> all_k(20, kItems);
  const std::vector<std::unordered_set<int32_t>> none(20);
  std::vector<const std::unordered_set<int32_t>*> nonep;
  for (const auto& n : none) nonep.push_back(&n);
  const auto unfiltered = top_k_items_batch(net, hidden, all_k, nonep);
  for (size_t b = 0; b < 20; ++b) {
    // The reference: the unfiltered ranking, checked against the plain scorer, restricted.
    std::vector<float> row;
    net.score_representation(hidden[b], row);
    ASSERT_EQ(row.size(), static_cast<size_t>(kItems));
    const auto& full = unfiltered[b];
    ASSERT_EQ(full.size(), static_cast<size_t>(kItems));
    std::vector<ScoredId> want;
    for (const ScoredId& s : full) {
      EXPECT_NEAR(s.score, row[static_cast<size_t>(s.id - 1)], 1e-4f * std::max(1.f, std::fabs(s.score)));
      if (allow[b] && !allow[b]->allowed(s.id)) continue;
      if (ex[b].count(s.id)) continue;
      if (static_cast<int64_t>(want.size()) < ks[b]) want.push_back(s);
    }
    ASSERT_EQ(batch[b].size(), want.size()) << "request " << b;
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(batch[b][i].id, want[i].id) << "request " << b << " rank " << i + 1;
      EXPECT_EQ(batch[b][i].score, want[i].score) << "request " << b << " rank " << i + 1;
    }
    // One request alone gives the same answer as in the batch.
    const auto alone = top_k_items_batch(net, {hidden[b]}, {ks[b]}, {exp[b]}, {allow[b]});
    ASSERT_EQ(alone.front().size(), batch[b].size());
    // (alone, the kernel is a matrix-vector product: scores equal to rounding)
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_NEAR(alone.front()[i].score, batch[b][i].score, 1e-5f * std::max(1.f, std::fabs(want[i].score)));
      EXPECT_TRUE(!allow[b] || allow[b]->allowed(alone.front()[i].id));
    }
  }
  // The empty filter result: nothing returned.
  EXPECT_TRUE(top_k_items_batch(net, {hidden[0]}, {10}, {exp[0]}, {&sets.back()}).front().empty());
  // Both paths were taken: dense filters and sparse ones (at most 1/16 of the items).
  EXPECT_GT(sets[0].count * 16, kItems);
  EXPECT_LE(sets[4].count * 16, kItems);
  EXPECT_GT(sets[4].count, 0);
  EXPECT_LE(sets[5].count * 16, kItems);
  EXPECT_GT(sets[5].count, 0);
}
