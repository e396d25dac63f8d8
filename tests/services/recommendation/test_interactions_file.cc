// Interaction file parsing (no database): RecBole typed headers in any column order, CSV
// with quotes, rejected rows with their line numbers and reasons, bad headers, detection.
#include "mamba/recommendation/interactions_file.h"

#include <gtest/gtest.h>

#include <sstream>

using namespace mamba::recommendation;

namespace {

struct Parsed {
  std::vector<InteractionRow> rows;
  std::vector<RejectedRow> rejected;
  int64_t read = 0;
  InterFormat format = InterFormat::auto_detect;
};

Parsed parse(const std::string& text, const std::string& source, InterFormat f = InterFormat::auto_detect) {
  std::istringstream in(text);
  InteractionReader r(in, source, f);
  Parsed p;
  InteractionRow row;
  while (r.next(row)) p.rows.push_back(row);
  p.rejected = r.rejected();
  p.read = r.rows_read();
  p.format = r.format();
  EXPECT_EQ(r.rejected_count(), static_cast<int64_t>(p.rejected.size()));
  return p;
}

}  // namespace

TEST(InteractionsFile, RecBoleColumnsInAnyOrderExtraColumnsIgnored) {
  const auto p = parse(
      "timestamp:float\trating:float\titem_id:token\tgenre:token_seq\tuser_id:token\r\n"
      "881250949\t3\t242\tA B\t196\r\n"
      "891717742\t+1.5\t302\t\t186\r\n",
      "ml.inter");
  EXPECT_EQ(p.format, InterFormat::recbole);
  ASSERT_EQ(p.rows.size(), 2u);
  EXPECT_EQ(p.rows[0].user_key, "196");
  EXPECT_EQ(p.rows[0].item_key, "242");
  EXPECT_DOUBLE_EQ(p.rows[0].ts, 881250949);
  EXPECT_FLOAT_EQ(p.rows[0].weight, 3.f);
  EXPECT_EQ(p.rows[0].event_type, "interaction");
  EXPECT_EQ(p.rows[0].line, 2);
  EXPECT_FLOAT_EQ(p.rows[1].weight, 1.5f);
  EXPECT_EQ(p.rows[1].line, 3);
}

TEST(InteractionsFile, RejectedRowsCarryLineAndReason) {
  const auto p = parse(
      "user_id:token\titem_id:token\ttimestamp:float\n"
      "1\t2\t10\n"
      "1\t3\n"           // line 3: column count
      "\n"               // line 4: blank, skipped
      "1\t\t11\n"        // line 5: missing item
      "1\t4\tabc\n"      // line 6: bad number
      "1\t5\tnan\n"      // line 7: not finite
      "2\t6\t12\textra\n"  // line 8: column count
      "2\t7\t1e3\n",
      "x.inter");
  ASSERT_EQ(p.rows.size(), 2u);
  EXPECT_EQ(p.rows[1].line, 9);
  EXPECT_DOUBLE_EQ(p.rows[1].ts, 1000);
  EXPECT_EQ(p.read, 7);
  ASSERT_EQ(p.rejected.size(), 5u);
  EXPECT_EQ(p.rejected[0].line, 3);
  EXPECT_NE(p.rejected[0].reason.find("wrong column count"), std::string::npos);
  EXPECT_EQ(p.rejected[1].line, 5);
  EXPECT_NE(p.rejected[1].reason.find("missing field 'item_id'"), std::string::npos);
  EXPECT_EQ(p.rejected[2].line, 6);
  EXPECT_NE(p.rejected[2].reason.find("bad number in column 'timestamp': 'abc'"), std::string::npos);
  EXPECT_EQ(p.rejected[3].line, 7);
  EXPECT_EQ(p.rejected[4].line, 8);
}

TEST(InteractionsFile, CsvWithQuotesRatingAndEventType) {
  const auto p = parse(
      "\xEF\xBB\xBFitem_id,user_id,timestamp,event_type,rating,comment\n"
      "\"a,1\",u1,5,click,,\"x\"\n"
      "b, \"u \"\"2\"\"\" ,6.25,purchase,2,y\n"
      "c,u3,7,\"unterminated\n",
      "events.csv");
  EXPECT_EQ(p.format, InterFormat::csv);
  ASSERT_EQ(p.rows.size(), 2u);
  EXPECT_EQ(p.rows[0].item_key, "a,1");
  EXPECT_EQ(p.rows[0].event_type, "click");
  EXPECT_FLOAT_EQ(p.rows[0].weight, 1.f);
  EXPECT_EQ(p.rows[1].user_key, "u \"2\"");
  EXPECT_DOUBLE_EQ(p.rows[1].ts, 6.25);
  EXPECT_FLOAT_EQ(p.rows[1].weight, 2.f);
  ASSERT_EQ(p.rejected.size(), 1u);
  EXPECT_EQ(p.rejected[0].line, 4);
  EXPECT_EQ(p.rejected[0].reason, "unterminated quote");
}

TEST(InteractionsFile, FormatDetectionFromHeaderAndOverride) {
  EXPECT_EQ(parse("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n", "stdin").format, InterFormat::recbole);
  EXPECT_EQ(parse("user_id,item_id,timestamp\n1,2,3\n", "stdin").format, InterFormat::csv);
  EXPECT_EQ(parse("user_id,item_id,timestamp\n1,2,3\n", "a.inter", InterFormat::csv).rows.size(), 1u);
  EXPECT_EQ(parse_inter_format("recbole"), InterFormat::recbole);
  EXPECT_THROW(parse_inter_format("parquet"), mamba::Error);
}

TEST(InteractionsFile, BadHeadersThrow) {
  auto header_error = [](const std::string& text, const std::string& part) {
    std::istringstream in(text);
    try {
      InteractionReader r(in, "f.csv");
      ADD_FAILURE() << "no error for " << text;
    } catch (const InteractionFileError& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  header_error("", "no header");
  header_error("user_id,item_id\n1,2\n", "no 'timestamp' column");
  header_error("user_id,item_id,timestamp,user_id\n", "twice");
}
