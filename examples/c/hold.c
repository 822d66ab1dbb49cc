/*
 * Holds a seat of a licensed feature from a C program, as a vendor's
 * program would: check out, keep working while the library heartbeats
 * (and fails over when a server dies), check in.
 *
 *   cc -std=c11 -I crates/tessera-ffi/include examples/c/hold.c \
 *      -L target/debug -ltessera -Wl,-rpath,target/debug -o hold
 *   TESSERA_SERVERS=127.0.0.1:7001,127.0.0.1:7002 TESSERA_CA_FILE=ca.pem \
 *   TESSERA_VENDOR=acme TESSERA_VENDOR_KEY=... ./hold app 1.0 10
 *
 * Prints one line per event; exits 0 when the seat stayed valid for the
 * whole hold and was checked in, 1 on an error, 2 if the seat was lost.
 * A real program builds its vendor key in instead of reading it from the
 * environment.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep */

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tessera.h"

static atomic_int changes;

static void on_change(TesseraSeatState state, const char *detail, void *user_data) {
    (void)user_data;
    atomic_fetch_add(&changes, 1);
    printf("seat %s: %s\n", state == TESSERA_SEAT_STATE_HELD ? "held on" : "lost", detail);
    fflush(stdout);
}

static int fail(const char *what, TesseraStatus status) {
    printf("%s failed: %s (%s; server code `%s`)\n", what, tessera_status_name(status),
           tessera_last_error_message(), tessera_last_error_server_code());
    return 1;
}

static void sleep_ms(long ms) {
    struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&pause, NULL);
}

/* The library's answers to bad arguments and refusals: codes, not crashes. */
static int expect_refusals(TesseraClient *client) {
    TesseraSeat *seat = NULL;
    TesseraStatus status = tessera_checkout(client, NULL, "1.0", 1, 0, &seat);
    if (status != TESSERA_STATUS_INVALID_ARGUMENT || seat != NULL) {
        return fail("a NULL feature", status);
    }
    printf("NULL feature: %s (%s)\n", tessera_status_name(status), tessera_last_error_message());
    status = tessera_checkout(client, "no-such-feature", "1.0", 1, 5000, &seat);
    if (status != TESSERA_STATUS_REJECTED ||
        strcmp(tessera_last_error_server_code(), "unknown_feature") != 0) {
        return fail("an unknown feature", status);
    }
    printf("unknown feature: %s, server code %s\n", tessera_status_name(status),
           tessera_last_error_server_code());
    tessera_seat_set_idle(NULL, true, 0); /* does nothing */
    if (tessera_seat_is_valid(NULL) || tessera_checkin(NULL) != TESSERA_STATUS_INVALID_ARGUMENT) {
        printf("NULL seat not refused\n");
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *feature = argc > 1 ? argv[1] : "app";
    const char *version = argc > 2 ? argv[2] : "1.0";
    int hold_s = argc > 3 ? atoi(argv[3]) : 10;
    const char *servers = getenv("TESSERA_SERVERS");
    if (servers == NULL) {
        printf("set TESSERA_SERVERS to the pool's host:port list\n");
        return 1;
    }

    TesseraConfig *config = tessera_config_new(servers);
    if (config == NULL) {
        return fail("tessera_config_new", tessera_last_error_status());
    }
    const char *ca_file = getenv("TESSERA_CA_FILE");
    TesseraStatus status = TESSERA_STATUS_OK;
    if (ca_file != NULL) {
        status = tessera_config_set(config, "ca_file", ca_file);
    }
    if (status == TESSERA_STATUS_OK) {
        status = tessera_config_add_vendor_key(config, getenv("TESSERA_VENDOR"),
                                               getenv("TESSERA_VENDOR_KEY"));
    }
    if (status == TESSERA_STATUS_OK) {
        status = tessera_config_set(config, "no_such_setting", "1");
        status = status == TESSERA_STATUS_INVALID_ARGUMENT ? TESSERA_STATUS_OK : TESSERA_STATUS_INTERNAL;
    }
    if (status != TESSERA_STATUS_OK) {
        tessera_config_free(config);
        return fail("the settings", status);
    }
    TesseraClient *client = tessera_client_new(config);
    tessera_config_free(config);
    if (client == NULL) {
        return fail("tessera_client_new", tessera_last_error_status());
    }
    if (expect_refusals(client) != 0) {
        tessera_client_free(client);
        return 1;
    }

    TesseraSeat *seat = NULL;
    status = tessera_checkout(client, feature, version, 1, 10000, &seat);
    if (status != TESSERA_STATUS_OK) {
        tessera_client_free(client);
        return fail("tessera_checkout", status);
    }
    tessera_seat_on_change(seat, on_change, NULL);
    char *first = tessera_seat_server_id(seat);
    printf("checked out %u seat of `%s` on %s\n", tessera_seat_count(seat), feature, first);
    printf("ready\n");
    fflush(stdout);

    /* The program's work: it checks the seat where it matters, and says
       whether its user is there (idle for as long as the system says
       since the last key press; in use here), for a pool whose policy frees
       the seats of idle programs. */
    int lost = 0;
    for (int tick = 0; tick < hold_s * 10; tick++) {
        tessera_seat_set_idle(seat, false, 0);
        if (!tessera_seat_is_valid(seat)) {
            lost = 1;
            break;
        }
        sleep_ms(100);
    }
    char *last = tessera_seat_server_id(seat);
    printf("after %d s: %s, held on %s (first on %s), %d state changes\n", hold_s,
           lost ? "LOST" : "valid", last, first, atomic_load(&changes));
    tessera_string_free(first);
    tessera_string_free(last);

    status = tessera_checkin(seat);
    if (status != TESSERA_STATUS_OK) {
        tessera_client_free(client);
        return fail("tessera_checkin", status);
    }
    printf("checked in\n");
    tessera_client_free(client);
    return lost ? 2 : 0;
}
