// placeholder until the layers land
#include <cstdio>
int main() { std::puts("golden: 0 passed, 0 failed"); return 0; }
