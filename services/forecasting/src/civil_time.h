// Private to the forecasting library: proleptic Gregorian calendar arithmetic on day
// counts since 1970-01-01 (negative before it), exact for any int64 range used here.
#pragma once

#include <cstdint>

namespace mamba::forecasting::detail {

inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

inline bool is_leap_year(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

inline int64_t days_in_month(int64_t y, int64_t m) {
  static constexpr int kDays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap_year(y) ? 29 : kDays[m - 1];
}

// Days since 1970-01-01 of year y, month m (1..12), day d (1..31). Counts in 400-year
// eras of 146097 days, with the year starting in March so the leap day comes last.
inline int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2 ? 1 : 0;
  const int64_t era = floor_div(y, 400);
  const int64_t yoe = y - era * 400;                       // [0, 399]
  const int64_t mp = (m + 9) % 12;                         // March = 0
  const int64_t doy = (153 * mp + 2) / 5 + d - 1;          // [0, 365]
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;                      // 719468: 0000-03-01 to 1970-01-01
}

// The inverse of days_from_civil.
inline void civil_from_days(int64_t z, int64_t& y, int64_t& m, int64_t& d) {
  z += 719468;
  const int64_t era = floor_div(z, 146097);
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  d = doy - (153 * mp + 2) / 5 + 1;
  m = mp < 10 ? mp + 3 : mp - 9;
  y = yoe + era * 400 + (m <= 2 ? 1 : 0);
}

// 1-based day of the year.
inline int64_t day_of_year(int64_t y, int64_t m, int64_t d) { return days_from_civil(y, m, d) - days_from_civil(y, 1, 1) + 1; }

}  // namespace mamba::forecasting::detail
