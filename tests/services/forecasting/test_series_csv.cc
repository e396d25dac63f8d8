// Series CSV reading/writing and timestamps: syntax variants, reported missing values,
// ragged and non-numeric rows, the real ETTh2 file, interval inference and future labels.
#include "mamba/forecasting/series_csv.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>

namespace fs = std::filesystem;
using namespace mamba::forecasting;

namespace {

// Expects parse_series_csv(text) to throw a mamba::Error whose message contains every part.
void expect_error(const std::string& text, std::initializer_list<std::string> parts) {
  try {
    parse_series_csv(text, "t.csv");
    ADD_FAILURE() << "no error for:\n" << text;
  } catch (const mamba::Error& e) {
    const std::string m = e.what();
    for (const auto& p : parts) EXPECT_NE(m.find(p), std::string::npos) << "'" << p << "' not in: " << m;
  }
}

float at(const MultiSeries& s, int64_t t, int64_t v) { return s.values.data<float>()[t * s.num_variables() + v]; }

}  // namespace

TEST(SeriesCsv, GoodFile) {
  const auto s = parse_series_csv("date,a,b\n2020-01-01 00:00:00,1.5,-2\n2020-01-01 01:00:00,3e2,4.25\n");
  ASSERT_EQ(s.num_steps(), 2);
  ASSERT_EQ(s.names, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(s.time_column, "date");
  EXPECT_EQ(s.timestamps[1], "2020-01-01 01:00:00");
  EXPECT_EQ(s.values.shape(), (mamba::Shape{2, 2}));
  EXPECT_FLOAT_EQ(at(s, 0, 0), 1.5f);
  EXPECT_FLOAT_EQ(at(s, 0, 1), -2.f);
  EXPECT_FLOAT_EQ(at(s, 1, 0), 300.f);
  EXPECT_FLOAT_EQ(at(s, 1, 1), 4.25f);
}

TEST(SeriesCsv, DateColumnByNameNotFirst) {
  const auto s = parse_series_csv("x,Date,y\n1,2020-01-01,2\n3,2020-01-02,+4\n");
  EXPECT_EQ(s.time_column, "Date");
  EXPECT_EQ(s.names, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(s.timestamps[1], "2020-01-02");
  EXPECT_FLOAT_EQ(at(s, 1, 0), 3.f);
  EXPECT_FLOAT_EQ(at(s, 1, 1), 4.f);
}

TEST(SeriesCsv, QuotedFieldsCrlfWhitespaceBomNoTrailingNewline) {
  const std::string text =
      "\xEF\xBB\xBF\"date\", \"load, kW\" ,\"say \"\"hi\"\"\"\r\n"
      "\"2020-01-01\",  \"1.0\" , 2 \r\n"
      "\r\n"
      "2020-01-02 ,\t3,\"4\"";
  const auto s = parse_series_csv(text);
  ASSERT_EQ(s.names, (std::vector<std::string>{"load, kW", "say \"hi\""}));
  ASSERT_EQ(s.num_steps(), 2);
  EXPECT_EQ(s.timestamps[0], "2020-01-01");
  EXPECT_EQ(s.timestamps[1], "2020-01-02");
  EXPECT_FLOAT_EQ(at(s, 0, 0), 1.f);
  EXPECT_FLOAT_EQ(at(s, 1, 1), 4.f);
}

TEST(SeriesCsv, QuotedLineBreakKeepsLineNumbers) {
  // The header's second name spans two lines; the error for the bad cell names line 4.
  expect_error("date,\"a\nb\"\n2020-01-01,1\n2020-01-02,x\n", {"line 4", "column 'a\nb'", "'x'"});
}

TEST(SeriesCsv, MissingValuesAreReportedWithLinesAndColumns) {
  const std::string text =
      "date,a,b\n"
      "2020-01-01,1,2\n"
      "2020-01-02,,2\n"      // line 3, a
      "2020-01-03,NA,null\n" // line 4, a and b
      "2020-01-04,1,NaN\n"   // line 5, b
      "2020-01-05,n/a,2\n"   // line 6, a
      "2020-01-06,None,2\n"; // line 7, a
  try {
    parse_series_csv(text, "t.csv");
    FAIL() << "missing values were not reported";
  } catch (const MissingValuesError& e) {
    EXPECT_EQ(e.count(), 6);
    ASSERT_EQ(e.first().size(), MissingValuesError::kMaxListed);
    EXPECT_EQ(e.first()[0].line, 3);
    EXPECT_EQ(e.first()[0].column, "a");
    EXPECT_EQ(e.first()[1].line, 4);
    EXPECT_EQ(e.first()[2].line, 4);
    EXPECT_EQ(e.first()[2].column, "b");
    EXPECT_EQ(e.first()[3].line, 5);
    EXPECT_EQ(e.first()[4].line, 6);
    const std::string m = e.what();
    EXPECT_NE(m.find("6 missing values"), std::string::npos) << m;
    EXPECT_NE(m.find("line 3, column 'a'"), std::string::npos) << m;
  }
}

TEST(SeriesCsv, RaggedRowIsAnError) {
  expect_error("date,a,b\n2020-01-01,1,2\n2020-01-02,1\n", {"line 3", "2 fields", "header has 3", "ragged"});
  expect_error("date,a\n2020-01-01,1,2\n", {"line 2", "3 fields"});
}

TEST(SeriesCsv, NonNumericCellIsAnError) {
  expect_error("date,a,b\n2020-01-01,1,2\n2020-01-02,1,abc\n", {"line 3", "column 'b'", "'abc'"});
  expect_error("date,a\n2020-01-01,1.2.3\n", {"line 2", "column 'a'"});
  expect_error("date,a\n2020-01-01,inf\n", {"line 2", "'inf'"});
  expect_error("date,a\n2020-01-01,1e999\n", {"line 2"});
  expect_error("date,a\n2020-01-01,0x10\n", {"line 2"});
}

TEST(SeriesCsv, StructuralErrors) {
  expect_error("", {"empty"});
  expect_error("date,a\n", {"no data rows"});
  expect_error("date\n2020-01-01\n", {"no numeric column"});
  expect_error("date,a,a\n2020-01-01,1,2\n", {"duplicate column 'a'"});
  expect_error("date,a\n\"2020-01-01,1\n", {"line 2", "unterminated"});
}

TEST(SeriesCsv, WriteReadRoundTrip) {
  const fs::path dir = fs::path(MAMBA_TEST_TMP) / "series_csv";
  fs::create_directories(dir);
  MultiSeries s;
  s.timestamps = {"2020-01-01 00:00:00", "2020-01-01 01:00:00", "2020-01-01 02:00:00"};
  s.names = {"a", "b, quoted"};
  s.values = mamba::Tensor::from_vector({0.1f, -1e-7f, 3.4028e38f, 7.f, 1.f / 3.f, -0.f}, {3, 2});
  const std::string path = (dir / "roundtrip.csv").string();
  write_series_csv(path, s);
  const auto r = read_series_csv(path);
  EXPECT_EQ(r.timestamps, s.timestamps);
  EXPECT_EQ(r.names, s.names);
  ASSERT_EQ(r.values.shape(), s.values.shape());
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(r.values.data<float>()[i], s.values.data<float>()[i]) << i;
}

TEST(SeriesCsv, ReadsEtth2) {
  const auto s = read_series_csv(std::string(MAMBA_SHARED_DIR) + "/data/ETTh2.csv");
  EXPECT_EQ(s.num_steps(), 17420);
  EXPECT_EQ(s.num_variables(), 7);
  EXPECT_EQ(s.names, (std::vector<std::string>{"HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"}));
  EXPECT_EQ(s.timestamps.front(), "2016-07-01 00:00:00");
  EXPECT_EQ(s.timestamps.back(), "2018-06-26 19:00:00");
  EXPECT_FLOAT_EQ(at(s, 0, 0), 41.13000106811523f);
  EXPECT_FLOAT_EQ(at(s, 17419, 6), 45.98649978637695f);
  const TimeIndex idx = parse_time_index(s.timestamps);
  EXPECT_EQ(idx.interval_seconds, 3600);
  EXPECT_EQ(idx.style, TimestampStyle::date_time);
  EXPECT_EQ(future_timestamps(idx, 6),
            (std::vector<std::string>{"2018-06-26 20:00:00", "2018-06-26 21:00:00", "2018-06-26 22:00:00",
                                      "2018-06-26 23:00:00", "2018-06-27 00:00:00", "2018-06-27 01:00:00"}));
}

TEST(Timestamps, ParseStylesAndEpoch) {
  TimestampStyle st;
  EXPECT_EQ(parse_timestamp("1970-01-01", &st), 0);
  EXPECT_EQ(st, TimestampStyle::date);
  EXPECT_EQ(parse_timestamp("2016-07-01 00:00:00", &st), 1467331200);
  EXPECT_EQ(st, TimestampStyle::date_time);
  EXPECT_EQ(parse_timestamp("2016-07-01T01:15", &st), 1467331200 + 3600 + 900);
  EXPECT_EQ(st, TimestampStyle::iso_hour_minute);
  EXPECT_EQ(parse_timestamp("2000-02-29 23:59", &st), 951868740);
  EXPECT_EQ(st, TimestampStyle::date_hour_minute);
  EXPECT_EQ(parse_timestamp("1969-12-31T23:59:59", &st), -1);
  EXPECT_EQ(format_timestamp(-1, TimestampStyle::iso_time), "1969-12-31T23:59:59");
  for (const char* bad : {"2017-02-29", "2016-13-01", "2016-07-01 24:00", "2016/07/01", "07/01/2016", "2016-07-01 1:00",
                          "2016-07-01X00:00", "abc"})
    EXPECT_THROW(parse_timestamp(bad), mamba::Error) << bad;
  for (int64_t t : {int64_t{0}, int64_t{951868740}, int64_t{4102444799}, int64_t{-86400 * 365}})
    EXPECT_EQ(parse_timestamp(format_timestamp(t, TimestampStyle::date_time)), t);
}

TEST(Timestamps, IntervalIsTheMedianAndFutureLabelsKeepTheStyle) {
  // 15-minute data with one gap and one repeated row: the median is still 15 minutes.
  const TimeIndex idx = parse_time_index({"2020-03-01T00:00", "2020-03-01T00:15", "2020-03-01T00:30",
                                          "2020-03-01T00:30", "2020-03-01T01:30", "2020-03-01T01:45",
                                          "2020-03-01T02:00"});
  EXPECT_EQ(idx.interval_seconds, 900);
  EXPECT_EQ(idx.style, TimestampStyle::iso_hour_minute);
  EXPECT_EQ(future_timestamps(idx, 2), (std::vector<std::string>{"2020-03-01T02:15", "2020-03-01T02:30"}));

  const TimeIndex daily = parse_time_index({"2020-02-27", "2020-02-28"});
  EXPECT_EQ(daily.interval_seconds, 86400);
  EXPECT_EQ(future_timestamps(daily, 2), (std::vector<std::string>{"2020-02-29", "2020-03-01"}));

  EXPECT_THROW(parse_time_index({"2020-01-02", "2020-01-01"}), mamba::Error);  // decreasing
  EXPECT_THROW(parse_time_index({"2020-01-01"}), mamba::Error);                // one row
  try {
    parse_time_index({"2020-01-01", "2020-01-02", "oops"});
    ADD_FAILURE();
  } catch (const mamba::Error& e) {
    EXPECT_NE(std::string(e.what()).find("row 3"), std::string::npos) << e.what();
  }
  // 30-second data cannot be labelled in a minutes-only style.
  TimeIndex sub = parse_time_index({"2020-01-01 00:00:00", "2020-01-01 00:00:30"});
  sub.style = TimestampStyle::date_hour_minute;
  EXPECT_THROW(future_timestamps(sub, 1), mamba::Error);
}
