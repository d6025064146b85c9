//! Host work one step ahead of the device: while the device runs step i, another thread prepares
//! step i + 1 (decoding and resizing the next batch of images), so the device does not wait for
//! the host between batches. One prepared step waits at most, so memory stays bounded. Without
//! threads (the `parallel` feature off, as in the web page's build) the two simply alternate.

/// `consume(item, prepare(item))` for every item in order, `prepare` running one item ahead on
/// another thread. The first error from `consume` stops both and is returned; a panic in
/// `prepare` reaches the caller.
pub fn one_ahead<I: Sync, T: Send, E>(
    items: &[I],
    prepare: impl Fn(&I) -> T + Sync,
    mut consume: impl FnMut(&I, T) -> Result<(), E>,
) -> Result<(), E> {
    #[cfg(feature = "parallel")]
    {
        let (ready, prepared) = std::sync::mpsc::sync_channel(1);
        let prepare = &prepare;
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for item in items {
                    // Closed: the consumer stopped on an error.
                    if ready.send(prepare(item)).is_err() {
                        break;
                    }
                }
            });
            // Should `prepare` panic, the channel closes early and the scope re-raises the panic
            // once its thread is joined: a short run never passes for a whole one.
            for (item, value) in items.iter().zip(prepared) {
                consume(item, value)?;
            }
            Ok(())
        })
    }
    #[cfg(not(feature = "parallel"))]
    {
        for item in items {
            consume(item, prepare(item))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every item is consumed once, in order, with its own prepared value; an error stops the
    /// run at that item; a panicking `prepare` is not a quietly shorter run.
    #[test]
    fn items_are_consumed_in_order_and_an_error_stops_the_run() {
        let items: Vec<u32> = (0..50).collect();
        let mut seen = Vec::new();
        let all: Result<(), String> = one_ahead(
            &items,
            |&i| i * i,
            |&i, square| {
                seen.push((i, square));
                Ok(())
            },
        );
        all.unwrap();
        assert_eq!(seen, items.iter().map(|&i| (i, i * i)).collect::<Vec<_>>());

        let mut consumed = 0;
        let stopped = one_ahead(
            &items,
            |&i| i,
            |&i, _| {
                consumed += 1;
                if i == 7 {
                    Err(format!("stop at {i}"))
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!(stopped, Err("stop at 7".to_string()));
        assert_eq!(consumed, 8);

        let panicked = std::panic::catch_unwind(|| {
            one_ahead(
                &items,
                |&i| {
                    assert!(i < 3, "prepare fails at {i}");
                    i
                },
                |_, _| Ok::<(), String>(()),
            )
        });
        assert!(panicked.is_err(), "a panic in prepare reaches the caller");
    }
}
