/* The smallest program there is: what limits.c execs to time fork+exec.
 * Built static by the harness (cc -O2 -static -o exit0 exit0.c) so that no
 * dynamic loader runs. */
int main(void) { return 0; }
