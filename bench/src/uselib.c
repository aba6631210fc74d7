/* Loads libfoo.so from its own directory (-Wl,-rpath,$ORIGIN) and exits with foo(). */
int foo(void);
int main(void) { return foo(); }
