/* A shared library on the watched mount, loaded by uselib at start. */
int foo(void) { return 0; }
