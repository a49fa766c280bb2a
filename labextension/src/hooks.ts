/**
 * React hooks that follow the model's Lumino signals.
 */
import { ISignal } from '@lumino/signaling';
import { useEffect, useState } from 'react';

/**
 * Read a value from the model now and again every time one of the signals
 * fires.
 */
export function useSignalValue<T>(
  signals: ISignal<any, any>[],
  read: () => T
): T {
  const [value, setValue] = useState<T>(read);
  useEffect(() => {
    const slot = () => setValue(read());
    for (const signal of signals) {
      signal.connect(slot);
    }
    slot();
    return () => {
      for (const signal of signals) {
        signal.disconnect(slot);
      }
    };
    // The signals are stable for a given model.
  }, signals);
  return value;
}

/** The current time, updated every `interval` ms while `active`. */
export function useNow(active: boolean, interval = 1000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!active) {
      return;
    }
    setNow(Date.now());
    const timer = setInterval(() => setNow(Date.now()), interval);
    return () => clearInterval(timer);
  }, [active, interval]);
  return now;
}
